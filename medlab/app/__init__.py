"""The application layer the three scripts share: flags, help pages, precedence and the
effective-parameter table (`cli`), run folders, saved configuration and the one-line error
contract (`runs`), Markdown reports (`report`), TensorBoard logs and the "has not learnt" check
(`collapse`); then each task's own room: `classification` (Tasks 1-3: `start` -> `CamRun` or
`TransferRun`) and `segmentation` (Task 4: `start` -> `SegmentationRun`, paired comparisons).

It sits between the entry scripts above and the library below (unet.py and the rest of `medlab`),
which never imports it (`lint-imports`). Nothing here imports TensorFlow at import time, except
`tensorboard_logs` and `segmentation.run`, which are imported where the pipelines need them."""
