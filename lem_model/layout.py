"""Names and axis layout of the LEM output, shared by the model, loss, metrics, evaluator and tables.

Pure Python (no Keras, no NumPy) so that every layer of the project can import it cheaply.

Model output `allocations`: float32 `[B, N, N+1, 4, 2]`
  - axis 1, step `k` (0..N-1): fraction of the order traded during execution bar `o+k`;
  - axis 2, minimum-period index `m` (0..N): for `m < N` the benchmark window lasts at least `m+1` bars
    (the "min period" `m+1` rows of the paper's tables); `m = N` is the match-benchmark head (window = all N
    bars, objective: minimise |slippage|);
  - axis 3, path: `PATHS` = buy-VWAP, buy-TWAP, sell-VWAP, sell-TWAP;
  - axis 4, target: `TARGETS` = volume (fractions of shares), notional (fractions of the notional amount).
"""

PATHS = ("buy_vwap", "buy_twap", "sell_vwap", "sell_twap")
PATH_SIDE = ("buy", "buy", "sell", "sell")
PATH_BENCHMARK = ("vwap", "twap", "vwap", "twap")
TARGETS = ("volume", "notional")
SIDES = ("buy", "sell")
BENCHMARKS = ("vwap", "twap")
NUM_PATHS = len(PATHS)
NUM_TARGETS = len(TARGETS)
#: 8 fused paths per minimum-period model: 4 paths x 2 targets.
PATHS_PER_MIN_PERIOD = NUM_PATHS * NUM_TARGETS

#: Label layout (`labels[..., j]` from `lem_model.features.build_features`): execution-bar volume and VWAP.
LABEL_VOLUME = 0
LABEL_VWAP = 1


def path_index(side: str, benchmark: str) -> int:
    """Index on the path axis of (`side`, `benchmark`), e.g. ("sell", "twap") -> 3."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    return PATHS.index(f"{side}_{benchmark}")


def target_index(target: str) -> int:
    """Index on the target axis of `target` ("volume" or "notional")."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return TARGETS.index(target)


def num_min_periods(n_ahead: int) -> int:
    """Size of the minimum-period axis: N flexible heads plus the match head."""
    return n_ahead + 1


def min_period_of_index(m: int, n_ahead: int) -> int:
    """Minimum window length in bars (1..N) of head `m`; the match head (`m = N`) spans all N bars."""
    if not 0 <= m <= n_ahead:
        raise ValueError(f"min-period index must be in 0..{n_ahead}, got {m}")
    return min(m + 1, n_ahead)


def scenario_index(m: int, path: int, target: int, n_ahead: int) -> int:
    """Flat index of scenario (`m`, `path`, `target`) in the model's P = (N+1) * 8 fused paths: the position of
    `allocations[:, :, m, path, target]` once the last three axes are flattened (`(m * 4 + path) * 2 + target`).
    The `serve_scenario` signature and `LargeExecutionModel.allocate_scenario` take it."""
    if not 0 <= m <= n_ahead:
        raise ValueError(f"min-period index must be in 0..{n_ahead}, got {m}")
    if not 0 <= path < NUM_PATHS or not 0 <= target < NUM_TARGETS:
        raise ValueError(f"path must be in 0..{NUM_PATHS - 1} and target in 0..{NUM_TARGETS - 1}, got {path}, {target}")
    return (int(m) * NUM_PATHS + int(path)) * NUM_TARGETS + int(target)
