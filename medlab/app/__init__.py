"""The application layer the three scripts share: flags from a parameter block (`cli`), run
folders, saved configuration and the one-line error contract (`runs`), Markdown reports
(`report`), the input gate (`checks`), TensorBoard logs, the "has not learnt" check (`collapse`)
and fault injection for the crash tests (`faults`).
Nothing here imports TensorFlow at import time."""
