"""TF Serving configuration shipped in serving/: models.config parses as TF Serving's ModelServerConfig, and
the Kubernetes manifests mount the Pusher's directory where that config points."""
import os

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

SERVING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving")


def _config(text):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def _manifests():
    docs = []
    for name in ("deployment.yaml", "service.yaml"):
        with open(os.path.join(SERVING, "k8s", name)) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return {d["kind"]: d for d in docs}


def test_models_config_is_a_valid_model_server_config():
    with open(os.path.join(SERVING, "models.config")) as f:
        cfg = _config(f.read())
    (model,) = cfg.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("lem", "/models/lem", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


def test_k8s_manifests_serve_the_pushed_directory_with_the_shipped_config():
    kinds = _manifests()
    with open(os.path.join(SERVING, "models.config")) as f:
        shipped = _config(f.read())
    assert _config(kinds["ConfigMap"]["data"]["models.config"]) == shipped
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    assert args["port"] == "8500"
    # the flags serving/README.md says the SavedModel needs: XLA-compiled small batches, the warm-up file,
    # loads and warm-up off the manager's main loop
    assert (args["xla_cpu_compilation_enabled"], args["enable_model_warmup"]) == ("true", "true")
    assert (args["num_load_threads"], args["num_unload_threads"]) == ("1", "1")
    config_mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args["model_config_file"] == os.path.join(config_mount["config"], "models.config")
    (model,) = shipped.model_config_list.config
    assert config_mount["models"] == model.base_path
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    service = kinds["Service"]["spec"]
    assert service["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["ports"]} == {8500, 8501}


def test_k8s_deployment_exports_prometheus_metrics_where_the_annotations_say():
    """TF Serving's monitoring config enables Prometheus on the REST port at the path the pod annotations give
    (the path `lems serve --metrics` uses too)."""
    import re

    from serving.metrics import DEFAULT_PATH
    kinds = _manifests()
    text = kinds["ConfigMap"]["data"]["monitoring.config"]
    block = re.fullmatch(r"\s*prometheus_config\s*\{(?P<body>[^}]*)\}\s*", text)
    assert block, text
    fields = dict(re.findall(r"(\w+)\s*:\s*(\S+)", block["body"]))
    assert fields == {"enable": "true", "path": f'"{DEFAULT_PATH}"'}
    pod = kinds["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
    config_mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args["monitoring_config_file"] == os.path.join(config_mount["config"], "monitoring.config")
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == DEFAULT_PATH
    assert notes["prometheus.io/port"] == args["rest_api_port"]
