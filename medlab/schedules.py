"""The learning-rate schedules of `--lr-schedule` (every script) and `--scratch-lr-schedule`.

Keras is imported where a schedule is made, so the flags can list `SCHEDULES` without it."""

SCHEDULES = ("constant", "cosine")


def learning_rate(lr, schedule, total_steps=None):
    """`lr` as it is ("constant"), or a cosine decay from `lr` to 0 over the run's `total_steps`
    training steps ("cosine"): the last epochs take small steps, so the final weights, the ones
    scored, are settled rather than mid-jump."""
    import keras

    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}: constant or cosine")
    if not total_steps:
        raise ValueError("the cosine schedule needs the run's number of training steps")
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps)
