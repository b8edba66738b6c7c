"""Report building blocks shared by `benchmarks.bench`, `benchmarks.frontier` and `.ablation`.

Modules (import the one you need; nothing heavy is imported here):
    errors    BenchInputError, the one bad-input exception (CLIs map it to exit code 2)
    machine   CPU model / cores record printed with every table
    tables    column specs -> Markdown and CSV (raw values carried through unchanged)
    plots     line and bar charts -> PNG bytes (matplotlib object API, Agg canvas)
    html      a self-contained HTML page with embedded PNGs
    sweep     the resumable, lock-per-point sweep state machine
    stages    train / compile / bench CLIs run as subprocesses with logs and done-markers
"""

__all__: list[str] = []
