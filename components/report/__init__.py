"""ExecutionReport component: HTML report with the paper's tables and figures."""
