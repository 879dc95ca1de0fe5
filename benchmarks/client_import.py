"""Cost of embedding the order-management client: `import serving.client` in a fresh interpreter.

    python -m benchmarks.client_import [--repeats 5]

Each repeat starts a fresh interpreter that imports `serving.client` and prints its wall and CPU seconds, its
peak RSS and whether TensorFlow, Keras or TFX were loaded; the same for numpy + grpc + protobuf alone (the
client's own dependencies, as the machine's yardstick). Writes benchmarks/results/client_import.json
(target, issue 35: under 0.5 s, nothing of TensorFlow loaded).
"""
import argparse
import json
import os
import subprocess
import sys

from benchmarks._common import ROOT, target, write_result

PROBE = ("import json, resource, sys, time; c = time.process_time(); t = time.perf_counter(); {stmt}; "
         "w = time.perf_counter() - t; u = time.process_time() - c; "
         "heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'tensorflow', 'keras', 'tfx'}}); "
         "print(json.dumps([w, u, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, heavy]))")


def probe(stmt: str, repeats: int) -> list:
    out = []
    for _ in range(repeats):
        p = subprocess.run([sys.executable, "-c", PROBE.format(stmt=stmt)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, PYTHONPATH=ROOT), check=True)
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    client = probe("import serving.client", args.repeats)
    deps = probe("import numpy, grpc, google.protobuf.descriptor_pb2", args.repeats)
    wall = sorted(r[0] for r in client)
    median = wall[len(wall) // 2]
    heavy = sorted({m for r in client for m in r[3]})
    rss = max(r[2] for r in client)
    print(f"import serving.client: wall {wall[0]:.3f}-{wall[-1]:.3f} s (median {median:.3f}), peak RSS {rss:.0f} MB, "
          f"heavy modules {heavy or 'none'}; numpy + grpc + protobuf alone: median "
          f"{sorted(r[0] for r in deps)[len(deps) // 2]:.3f} s")
    targets = [target("`import serving.client` in a fresh interpreter, median wall (issue 35: < 0.5 s, no TensorFlow)",
                      f"{median:.2f} s ({wall[0]:.2f}-{wall[-1]:.2f}), {rss:.0f} MB peak RSS, TensorFlow/Keras/TFX "
                      f"loaded: {', '.join(heavy) or 'none'}", "< 0.5 s, none loaded", median < 0.5 and not heavy)]
    print(f"wrote {write_result('client_import', targets, {'client': client, 'dependencies_alone': deps})}")


if __name__ == "__main__":
    main()
