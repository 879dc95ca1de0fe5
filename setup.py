"""lems-tfx: a TFX pipeline that trains, evaluates, serves and backfills Large Execution Models (LEMs)."""
from setuptools import find_packages, setup

setup(
    name="lems-tfx",
    version="0.1.0",
    description="TFX pipeline for Large Execution Models (Genet & Inzirillo, 2025): "
                "trade-execution schedules against VWAP/TWAP.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.11",  # TFX 1.16 wheels and our pinned set; see constraints.txt
    packages=find_packages(include=["lem_model*", "components*", "pipeline*", "kubeflow*", "serving*", "backfill*", "walkforward*", "lems_cli*"]),
    package_data={"": ["*.pbtxt", "*.json", "*.yaml", "*.config", "*.proto"]},   # *.proto: serving/protos
    include_package_data=True,
    install_requires=[
        # TFX 1.16 brings tensorflow 2.16, Keras 3, TFT 1.16, TFMA 0.47, Beam 2.5x+, ML Metadata 1.16.
        # TFX >= 1.17 ships manylinux_2_39-only ml-metadata wheels; the upper bound is what we have tested.
        "tfx[kfp]>=1.16.0,<1.17",
        "keras>=3.3,<4",
        "dill",                        # tensorflow_transform imports it but does not declare it
        "numpy>=1.22,<2",              # TF 2.16 and TFT 1.16 are built against numpy 1.x
        "pandas>=1.5,<3",
        "pyarrow>=10",
        "google-crc32c>=1.1",          # TFRecord framing of the ingestion writer
        "matplotlib>=3.5",
        # TKAN recurrent layers (CC BY-NC-SA 4.0: barred for commercial use; LSTM/GRU are licence-clean
        # alternatives, see lem_model.model). tkan 0.4.3 needs keras_efficient_kan>=0.1.9, which needs numpy 2.
        "tkan>=0.4.2,<0.4.3",
        "keras_efficient_kan>=0.1.8,<0.1.9",
    ],
    extras_require={
        # JAX (CPU) so that `make test` runs the JAX-backend tests: 0.4.34 is the newest JAX whose ml_dtypes
        # range admits TensorFlow 2.16's ml-dtypes~=0.3.1 (0.4.35+ need ml_dtypes>=0.4); pinned in constraints.
        "test": ["pytest>=7", "hypothesis>=6", "jax[cpu]>=0.4.30,<0.4.35"],
        "jax": ["jax[cpu]>=0.4.30,<0.4.35"],
        # The thin serving client (serving.client, serving.scheduling, serving.protos) needs only these; to
        # install it without TensorFlow/TFX: `pip install --no-deps .` then these, pinned by constraints.txt
        # (`pip install -c constraints.txt grpcio protobuf numpy`; serving/README.md). Ranges: plans checked
        # identical at grpcio 1.48.2 / protobuf 3.20.3 / numpy 1.22.4, the pinned set, and 1.85.1 / 6.33.6 / 2.2.6.
        "client": ["grpcio>=1.48", "protobuf>=3.20.3,<7", "numpy>=1.22,<3"],
    },
    entry_points={"console_scripts": ["lems=lems_cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Topic :: Office/Business :: Financial :: Investment",
    ],
)
