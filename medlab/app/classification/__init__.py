"""Tasks 1-3's application around the library `medlab.classification`, as `segmentation` is
Task 4's:

    cam_parameters.py, transfer_parameters.py   each parameter declared once: lab default, help,
                                                group, choices, range
    script.py       what a classifier script hands over by keyword (`Script`), its flags, the
                    precedence of its parameters and the table that names the preset;
                    `ClassifierRun`, the run folder and its end
    cam_run.py      Task 3: `start` -> `CamRun` (data, checks, maps, metrics, sentences, figures,
                    HParams, summary.md) and the `explain` subcommand
    transfer_run.py Tasks 1-2: `start` -> `TransferRun` (data, checks, features, scores with
                    intervals, sentences, figures, models with sidecars, summary.md) and `predict`
"""
