"""Run a command and report its wall time and peak memory, polled every 0.1 s with psutil over the process tree:
the peak of the summed PSS (proportional set size: pages shared between a forked child and its parent are
split between them, not counted twice as a summed RSS would), the peak summed RSS, and the largest
single-process max RSS (getrusage of the children)."""
import resource
import subprocess
import threading
import time


def run_with_peak_rss(cmd, env=None, cwd=None, timeout=None, poll_s=0.1) -> dict:
    import psutil
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"tree_rss": 0, "tree_pss": 0, "procs": 1}
    stop = threading.Event()

    def poll():
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                rss = pss = 0
                for p in procs:
                    try:
                        m = p.memory_full_info()
                        rss += m.rss
                        pss += getattr(m, "pss", m.rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak["tree_rss"] = max(peak["tree_rss"], rss)
                if pss > peak["tree_pss"]:
                    peak["tree_pss"], peak["procs"] = pss, len(procs)
            except psutil.NoSuchProcess:
                return
            stop.wait(poll_s)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        th.join()
    wall = time.perf_counter() - t0
    return {"rc": proc.returncode, "stdout": out, "stderr": err, "wall_s": wall,
            "peak_tree_rss_mib": peak["tree_rss"] / 2**20, "peak_tree_pss_mib": peak["tree_pss"] / 2**20,
            "procs_at_peak": peak["procs"],
            "children_max_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
