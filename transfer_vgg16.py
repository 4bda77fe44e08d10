"""Lab 4, Tasks 1-2: transfer learning with a frozen ImageNet VGG16 vs training from scratch.

    python transfer_vgg16.py --dataset skin  # data/Skin, or a synthetic demo set if absent
    python transfer_vgg16.py --data-dir PATH --weights PATH/vgg16_notop.h5 --folds 5
    python transfer_vgg16.py --dataset bone --preset recommended   # what learnt best on real data

VGG16's convolutional base turns every image into a 7x7x512 feature map once (cached on disk);
only a small head is trained on those features. The lab's from-scratch VGG16-style model is
trained on the same split for the same number of epochs, and both are scored on the same
validation images with bootstrap confidence intervals, so the comparison says whether the
difference is larger than the noise. `predict` classifies new images with a saved model.

Precedence, lowest first: the lab defaults (the handout's, docs/lab.md; declared with their help
and ranges in medlab/app/classification/transfer_parameters.py), the demo settings (only on
generated data), your edits in PARAMETERS below (any value that differs from the lab default),
--preset, and the flags typed (`--help` lists them). So `"epochs": 10` edited below trains 10
epochs on the demo set as on real data. The run prints each value with its source, and summary.md
keeps that table (docs/parameters.md).

Reading order: the parameters, the named settings, the demo's settings, then `train` (the whole
pipeline) and the two trainings it compares. Flags, data, checks, scores, reports and the run
folder are `medlab.app.classification.transfer_run`'s; the Keras side is
`medlab.classification.transfer`.
"""

from medlab.app.classification import transfer_run
from medlab.app.runs import run_commands, set_seed
from medlab.distribute import configure_precision

# Your values; the lab's are the defaults, so an unchanged line is not an edit.
PARAMETERS = {
    # data
    "dataset": "skin",
    "data_dir": "",
    "val_fraction": 0.2,
    "folds": 0,
    "cache_dir": "data/cache/vgg16-features",
    # model: the frozen VGG16 and its head
    "weights": "imagenet",
    "preprocess": "vgg16",
    "feature_precision": "float32",
    "image_size": 224,
    "dense_units": 128,
    "dropout": 0.5,
    # model: the from-scratch VGG16-style model
    "scratch_size": 128,
    "scratch_channels": 1,
    "scratch_base": 8,
    "scratch_centre": False,
    "scratch_batch_norm": False,
    "scratch_pooling": "flatten",
    "scratch_dropout": 0.4,
    # training
    "epochs": 150,
    "lr": 1e-5,
    "batch_size": 8,
    "scratch_lr": 1e-5,
    "scratch_lr_schedule": "constant",
    "scratch_epochs": 0,
    "scratch_batch_size": 0,
    "class_weight": "none",
    "augment": False,
    "seed": 0,
    "seeds": 1,
    # evaluation and output
    "positive": "auto",
    "bootstrap": 2000,
    "out": "results/transfer",
    # scaling (docs/scaling.md): batch_size above is per replica
    "strategy": "auto",
    "mixed_precision": "off",
    "jit": None,  # None: compiled on JAX, not on TensorFlow (docs/scaling.md)
}

# Named settings for the from-scratch model and the class weights (--preset; over the demo
# settings and your edits, under the flags), as in cam_vgg16.py: "lab" is the defaults, the
# handout's Lab 2 model exactly ([0, 1] pixels without the centring layer, one channel, lr 1e-5,
# the lab's epochs); "recommended" what learnt best on real data (docs/transfer.md, "Presets").
PRESETS = {
    "lab": transfer_run.LAB,  # the handout's from-scratch model and training: the defaults
    "recommended": {
        "scratch_channels": 3,  # the photos' colour
        "scratch_centre": True,  # pixels centred on 0: the plain VGG otherwise stalls at 0.693
        "scratch_lr": 1e-3,
        "scratch_batch_norm": True,
        "scratch_pooling": "avg",
        "scratch_dropout": 0.0,
        "scratch_lr_schedule": "cosine",
        "scratch_epochs": 40,
        "scratch_batch_size": 32,
        "augment": True,
        "class_weight": "balanced",
    },
}

# Without data, a generated set replaces data/Skin or data/Bone, and these settings replace the lab
# defaults (not your edits above, a preset or flags) so that the demo finishes in minutes on a
# laptop CPU; its from-scratch model sees the colour photos' 3 channels, centred on 0 (the
# handout's [0, 1] start slower: docs/gradcam.md, "Input centring").
SYNTHETIC_DEMO = {
    "image_size": 128,
    "epochs": 30,
    "lr": 1e-4,
    "scratch_size": 64,
    "scratch_channels": 3,
    "scratch_centre": True,
    "scratch_lr": 1e-4,
}


def main(argv=None):
    return run_commands(
        argv, {"train": train, **COMMANDS}, lower=transfer_run.LOWER_ON_OUT_OF_MEMORY
    )


# ----------------------------------------------------------------------------- the pipeline


def train(argv):
    """Tasks 1-2: a head on frozen VGG16 features vs the from-scratch model, on the same images."""
    # 1. The flags, the data (the synthetic demo set, with its settings, when there is none) and
    # its split, the parameters printed with each value's source, the checks; TensorFlow starts
    # only after them, so that a typo answers at once.
    run = transfer_run.start(
        argv,
        parameters=PARAMETERS,
        presets=PRESETS,
        demo=SYNTHETIC_DEMO,
        commands=COMMANDS,
        doc=__doc__,
    )
    params = run.params
    # 2. The frozen VGG16 backbone and its (cached) features, before the run folder: a corrupt
    # image stops here. The precision policy only after the features are cached, so it never
    # reaches the backbone.
    set_seed(params["seed"])  # a random backbone (--weights none) is then the same in every run
    backbone = run.load_backbone()
    data = run.prepare_data(backbone)
    run.open_folder()
    configure_precision(params["mixed_precision"])
    # 3. Train the head and the from-scratch model on every (seed, fold).
    features, images, labels = data["features"], data["images"], data["labels"]
    for evaluation in run.evaluations():
        trainings = {"transfer": (train_transfer, features), "scratch": (train_scratch, images)}
        models, scores, seconds = {}, {}, {}
        for method, (train_model, inputs) in trainings.items():
            set_seed(evaluation.seed)
            models[method], scores[method], seconds[method] = train_model(
                inputs,
                labels,
                evaluation.train,
                evaluation.val,
                params,
                evaluation.seed,
                run.history(evaluation, method),
                run.scaling,
            )
        run.save(evaluation, models, scores, seconds)
    # 4. Score both with bootstrap intervals, compare them, check that each has learnt, and
    # report: metrics, TensorBoard, predictions, figures, models and summary.md.
    run.finish()
    return run.folder


def train_transfer(features, labels, train, val, params, seed, csv_path, scaling):
    """A fresh head trained on cached features; returns it with validation scores and seconds."""
    from medlab.classification import train as training
    from medlab.classification import transfer

    with scaling.scope():
        head = training.compile_classifier(
            transfer.build_head(features.shape[1:], params["dense_units"], params["dropout"]),
            params["lr"],
            jit_compile=scaling.jit,
        )
    print(f"training the transfer head on the cached VGG16 features ({params['epochs']} epochs)")
    batch_size = scaling.global_batch(params["batch_size"])
    targets = training.targets_for(head, labels)
    seconds = training.fit_logged(
        head,
        training.image_dataset(
            features[train], targets[train], batch_size, shuffle=True, seed=seed
        ),
        training.image_dataset(features[val], targets[val], batch_size),
        params["epochs"],
        csv_path,
        class_weight=training.class_weights(labels[train], params["class_weight"]),
        callbacks=[transfer_run.tensorboard_logger(csv_path)],
    )
    return head, training.class_one_scores(head, features[val]), seconds


def train_scratch(images, labels, train, val, params, seed, csv_path, scaling):
    """A fresh from-scratch model trained on the images; returns it, its scores and seconds."""
    from medlab import schedules
    from medlab.classification import train as training

    epochs = transfer_run.scratch_epochs(params)
    batch_size = scaling.global_batch(transfer_run.scratch_batch_size(params))
    steps = epochs * -(-len(train) // batch_size)  # the last, partial batch is a step too
    lr = schedules.learning_rate(params["scratch_lr"], params["scratch_lr_schedule"], steps)
    with scaling.scope():
        model = training.compile_classifier(build_scratch(params), lr, jit_compile=scaling.jit)
    targets = training.targets_for(model, labels)
    train_data = training.image_dataset(
        images[train],
        targets[train],
        batch_size,
        shuffle=True,
        augment=params["augment"],
        seed=seed,
    )
    val_data = training.image_dataset(images[val], targets[val], batch_size)
    print(f"training the from-scratch model on the images ({epochs} epochs)")
    seconds = training.fit_logged(
        model,
        train_data,
        val_data,
        epochs,
        csv_path,
        class_weight=training.class_weights(labels[train], params["class_weight"]),
        callbacks=[transfer_run.tensorboard_logger(csv_path)],
        lr_flag="--scratch-lr",
    )
    return model, training.class_one_scores(model, images[val]), seconds


def build_scratch(params):
    """The lab's VGG16-style model (pixels centred on 0 inside it with `scratch_centre`)."""
    from medlab.classification import vgg

    return vgg.build_vgg16_style(
        (params["scratch_size"], params["scratch_size"], params["scratch_channels"]),
        base=params["scratch_base"],
        n_classes=1,
        centre=params["scratch_centre"],
        name="scratch_vgg16",
        batch_norm=params["scratch_batch_norm"],
        pooling=params["scratch_pooling"],
        dropout=params["scratch_dropout"],
    )


# ----------------------------------------------------------------------------- subcommands


def predict(argv):
    """the class and its probability for each image, with a model a run saved"""
    return transfer_run.predict_command(argv)


COMMANDS = {"predict": predict}


if __name__ == "__main__":
    main()
