"""The table of bad inputs: each case is a CLI invocation that must fail with one clear line.

Used by tests/test_bad_inputs.py and by scripts/bad_inputs_doc.py, which writes docs/bad-inputs.md.
Placeholders: {tmp} a fresh directory, {recipe} configs/smoke.yaml, {teacher} a trained model directory,
{signed} a signed copy of it, {pub} the signer's public key, {evil} a .pt file with a code-running pickle,
{garbage} a directory of malformed IDX files, {empty} an empty directory, {run} a finished run directory,
{key} the signer's private key ({keyprefix} without its suffix), {textrecipe} configs/text.yaml, {oneclass} and
{stray} IDX folders whose labels are all one class / hold one stray label 300, {truncreport} a run directory whose
report.json was cut off, {badwav} / {emptywav} / {emptyclass} / {noaudio}: audio folders (train/<class>/*.wav and
test/<class>/*.wav) with a corrupt WAV, a zero-byte WAV, an empty class folder, and class folders of no audio at all.
In {tmp}: bad.yaml, list.yaml, tag.yaml, dup.yaml (a key twice), latin.yaml and latin.csv (Latin-1, not UTF-8).
"""

SYN = [
    "--set",
    "data.name=synthetic",
    "--set",
    "data.val_size=64",
    "--set",
    "train.epochs=1",
    "--set",
    "teacher.train.epochs=1",
    "--set",
    "bench.repeats=1",
]
RUN = ["run", "{recipe}", "--out", "{tmp}/out", *SYN]

# (id, what is wrong, argv, regex the one-line message must match)
CASES = [
    (
        "yaml-malformed",
        "recipe is not valid YAML",
        ["run", "{tmp}/bad.yaml", "--out", "{tmp}/out"],
        "not valid YAML at line",
    ),
    (
        "yaml-not-mapping",
        "recipe is a list",
        ["run", "{tmp}/list.yaml", "--out", "{tmp}/out"],
        "must be a YAML mapping",
    ),
    (
        "yaml-python-tag",
        "YAML tag that would run code",
        ["run", "{tmp}/tag.yaml", "--out", "{tmp}/out"],
        "not valid YAML",
    ),
    ("recipe-missing", "recipe file does not exist", ["run", "{tmp}/nope.yaml"], "does not exist"),
    (
        "key-unknown",
        "misspelt top-level key",
        [*RUN, "--set", "trian.epochs=1"],
        "unknown key 'trian'. Did you mean 'train'",
    ),
    ("key-unknown-nested", "misspelt nested key", [*RUN, "--set", "train.epoch=1"], "Did you mean 'train.epochs'"),
    ("type-int", "epochs is not an integer", [*RUN, "--set", "train.epochs=three"], "train.epochs must be an integer"),
    ("type-bool", "augment is not a boolean", [*RUN, "--set", "data.augment=1"], "data.augment must be true or false"),
    ("type-list", "methods is not a list", [*RUN, "--set", "methods={name: kd}"], "methods must be a list"),
    ("override-syntax", "--set without '='", [*RUN, "--set", "train.lr"], "must look like key.path=value"),
    ("override-index", "--set into a missing list item", [*RUN, "--set", "methods.9.name=kd"], "list index below"),
    (
        "temperature-negative",
        "negative temperature",
        [*RUN, "--set", "methods=[{name: kd, params: {temperature: -1}}]"],
        r"temperature must be in \(0.0, inf\)",
    ),
    (
        "alpha-range",
        "alpha outside [0, 1]",
        [*RUN, "--set", "methods=[{name: kd, params: {alpha: 1.5}}]"],
        r"alpha must be in \[0.0, 1.0\]",
    ),
    (
        "label-smoothing-range",
        "label smoothing ≥ 1",
        [*RUN, "--set", "methods=[{name: kd, params: {label_smoothing: 1.5}}]"],
        "label_smoothing must be in",
    ),
    ("lr-negative", "negative learning rate", [*RUN, "--set", "train.lr=-0.1"], r"lr must be in \(0.0, inf\)"),
    ("epochs-zero", "zero epochs", [*RUN, "--set", "train.epochs=0"], "epochs must be >= 1"),
    ("optimizer-unknown", "unknown optimizer", [*RUN, "--set", "train.optimizer=adam"], "expected one of .*adamw"),
    ("batch-size-zero", "batch size 0", [*RUN, "--set", "data.batch_size=0"], "batch_size must be >= 1"),
    (
        "labeled-fraction-zero",
        "no training image keeps its label",
        [*RUN, "--set", "data.labeled_fraction=0"],
        r"labeled_fraction must be a fraction in \(0, 1\]",
    ),
    (
        "labeled-fraction-above-one",
        "labelled fraction above 1",
        [*RUN, "--set", "data.labeled_fraction=1.5"],
        r"labeled_fraction must be a fraction in \(0, 1\]",
    ),
    (
        "unlabelled-needs-labels",
        "dkd (needs every label) on a partly labelled transfer set",
        [*RUN, "--set", "data.labeled_fraction=0.5", "--set", "methods=[{name: dkd}]"],
        "needs a label on every training image",
    ),
    (
        "method-train-unknown",
        "misspelt key in a method's own train settings",
        [*RUN, "--set", "methods=[{name: scratch, train: {epoch: 3}}]"],
        r"unknown key 'methods\.0\.train\.epoch'",
    ),
    (
        "val-too-large",
        "validation split takes all data",
        [*RUN, "--set", "data.val_size=100000"],
        "leaves no training data",
    ),
    (
        "methods-duplicate",
        "two methods with one label",
        [*RUN, "--set", "methods=[{name: kd}, {name: kd}]"],
        "appear twice",
    ),
    ("method-unknown", "unknown method", [*RUN, "--set", "methods=[{name: dkdd}]"], "unknown method 'dkdd'.*Available"),
    (
        "method-param-unknown",
        "unknown method parameter",
        [*RUN, "--set", "methods=[{name: kd, params: {alpa: 0.5}}]"],
        "has no parameter.*alpha",
    ),
    ("model-unknown", "unknown model", [*RUN, "--set", "student.model=resnet9"], "unknown model 'resnet9'.*resnet8"),
    (
        "model-kwarg-unknown",
        "unknown model argument",
        [*RUN, "--set", "student.kwargs={depth: 3}"],
        "has no argument.*width",
    ),
    (
        "layer-unknown",
        "hint layer that does not exist",
        [*RUN, "--set", "methods=[{name: fitnet, params: {student_layer: layer9}}]"],
        "unknown layer .*layer1",
    ),
    (
        "dataset-unknown",
        "unknown dataset",
        [*RUN, "--set", "data.name=fmnist"],
        "unknown dataset 'fmnist'.*fashion_mnist",
    ),
    (
        "dataset-missing",
        "dataset not where it was said to be",
        [*RUN, "--set", "data.name=fashion_mnist", "--set", "data.root={empty}"],
        "apt-get install dataset-fashion-mnist",
    ),
    (
        "dataset-malformed",
        "IDX files that are not IDX",
        [*RUN, "--set", "data.name=fashion_mnist", "--set", "data.root={garbage}"],
        "magic",
    ),
    (
        "dataset-empty",
        "an image folder with no images",
        [*RUN, "--set", "data.name=image_folder", "--set", "data.root={empty}"],
        "(?i)no images|empty",
    ),
    (
        "audio-corrupt",
        "an audio folder with a corrupt WAV file",
        [*RUN, "--set", "data.name=audio_folder", "--set", "data.root={badwav}"],
        r"train/yes/broken\.wav: cannot read audio .*expected a WAV or FLAC file",
    ),
    (
        "audio-empty-file",
        "an audio folder with a zero-byte WAV file",
        [*RUN, "--set", "data.name=audio_folder", "--set", "data.root={emptywav}"],
        r"test/no/empty\.wav: cannot read audio",
    ),
    (
        "audio-empty-class",
        "an audio class folder without clips",
        [*RUN, "--set", "data.name=audio_folder", "--set", "data.root={emptyclass}"],
        r"class folder .*train/maybe has no audio files \(\*\.wav, \*\.flac\)",
    ),
    (
        "audio-none",
        "an audio folder whose class folders hold no audio",
        [*RUN, "--set", "data.name=audio_folder", "--set", "data.root={noaudio}"],
        r"class folder .*cats has no audio files",
    ),
    (
        "teacher-missing",
        "teacher directory does not exist",
        [*RUN, "--set", "teacher.checkpoint={tmp}/nope"],
        "is not a model directory",
    ),
    (
        "class-mismatch",
        "teacher made for other classes",
        [*RUN, "--set", "teacher.checkpoint={teacher}", "--set", "data.name=digits"],
        "4 classes .* 10 classes",
    ),
    (
        "arch-mismatch",
        "checkpoint of another architecture",
        [*RUN, "--set", "teacher.checkpoint={wrongarch}"],
        "do not fit",
    ),
    (
        "weights-tampered",
        "teacher weights changed after saving",
        [*RUN, "--set", "teacher.checkpoint={tampered}"],
        "does not match the sha256",
    ),
    (
        "signature-missing",
        "unsigned teacher where a signature is required",
        [*RUN, "--set", "teacher.checkpoint={teacher}", "--set", "teacher.public_key={pub}"],
        "is not signed",
    ),
    (
        "signature-tampered",
        "signed teacher modified afterwards",
        [*RUN, "--set", "teacher.checkpoint={signed}", "--set", "teacher.public_key={pub}"],
        "changed after signing",
    ),
    (
        "pickle-payload",
        "a .pt checkpoint whose pickle would run code",
        [*RUN, "--set", "student.model=torchvision:resnet18", "--set", "student.kwargs={checkpoint: '{evil}'}"],
        "(?i)refus",
    ),
    (
        "checkpoint-truncated",
        "resume from a truncated checkpoint",
        ["run", "{recipe}", "--out", "{truncrun}", *SYN, "--resume"],
        "corrupted or truncated",
    ),
    (
        "out-exists",
        "run directory already holds files",
        ["run", "{recipe}", "--out", "{run}", *SYN],
        "already exists.*--resume.*--overwrite",
    ),
    (
        "resume-other-recipe",
        "resume with another recipe",
        ["run", "{recipe}", "--out", "{run}", *SYN, "--set", "train.lr=0.5", "--resume"],
        "different recipe",
    ),
    ("device-cuda", "CUDA asked for on a machine without it", [*RUN, "--set", "device=cuda"], "CUDA is not available"),
    (
        "amp-fp16-cpu",
        "fp16 autocast on the CPU",
        [*RUN, "--set", "device=cpu", "--set", "amp=fp16"],
        "fp16' needs a CUDA device",
    ),
    (
        "evaluate-not-model",
        "evaluate a directory that is not a model",
        ["evaluate", "{empty}"],
        "is not a model directory",
    ),
    ("info-not-run", "info on a directory that is not a run", ["info", "{empty}"], "has no report.json"),
    (
        "out-exists-compress",
        "compress --out into an existing directory",
        ["compress", "--model", "{teacher}", "--out", "{run}"],
        "already exists.*--overwrite",
    ),
    (
        "out-exists-born-again",
        "born-again --out into an existing directory",
        ["born-again", "{recipe}", "--teacher", "{teacher}", "--out", "{run}", *SYN],
        "already exists.*--overwrite",
    ),
    (
        "out-exists-text",
        "text --out into an existing directory",
        ["text", "{textrecipe}", "--out", "{run}"],
        "already exists.*--overwrite",
    ),
    (
        "out-exists-report",
        "report --out onto an existing file",
        ["report", "{run}", "--out", "{run}/report.html"],
        "already exists.*--overwrite",
    ),
    (
        "out-exists-fetch",
        "models fetch --out into an existing directory",
        ["models", "fetch", "student", "--version", "1", "--out", "{run}"],
        "already exists.*--overwrite",
    ),
    (
        "sweep-out-not-sweep",
        "sweep --out into a directory that is not a sweep",
        ["sweep", "{recipe}", "--out", "{teacher}"],
        "is not a sweep directory",
    ),
    (
        "resume-not-a-run",
        "--resume into a directory that is not a run",
        ["run", "{recipe}", "--out", "{teacher}", *SYN, "--resume"],
        "is not a run directory",
    ),
    ("keygen-exists", "keygen onto an existing key", ["keygen", "--out", "{keyprefix}"], "refusing to overwrite a key"),
    (
        "sign-already-signed",
        "sign a model that already carries a signature",
        ["sign", "{signed}", "--key", "{key}"],
        "already signed.*--overwrite",
    ),
    (
        "verify-unsigned",
        "verify a model that was never signed",
        ["verify", "{teacher}", "--key", "{pub}"],
        "is not signed",
    ),
    # settings that used to pass silently, or fail only after the teacher had trained
    ("seed-negative", "negative seed", [*RUN, "--set", "seed=-1"], "seed must be an integer from 0 to"),
    (
        "grad-clip-negative",
        "negative grad_clip (gradient ascent)",
        [*RUN, "--set", "train.grad_clip=-1"],
        r"grad_clip must be null \(no clipping\) or a norm > 0",
    ),
    ("lr-inf", "infinite learning rate", [*RUN, "--set", "train.lr=.inf"], "train.lr must be a finite number"),
    (
        "temperature-inf",
        "infinite temperature",
        [*RUN, "--set", "methods=[{name: kd, params: {temperature: .inf}}]"],
        "temperature must be a finite number",
    ),
    (
        "param-not-a-number",
        "a word where a method wants a number",
        [*RUN, "--set", "methods=[{name: kd, params: {temperature: hot}}]"],
        "method 'kd': temperature must be a number, got 'hot'",
    ),
    (
        "option-not-a-number",
        "a word where a dataset option wants a number",
        [*RUN, "--set", "data.options={n_train: many}"],
        "synthetic: n_train must be an integer, got 'many'",
    ),
    (
        "train-subset-zero",
        "train_subset 0 (used to mean all samples)",
        [*RUN, "--set", "data.train_subset=0"],
        r"train_subset must be null \(the whole split\) or a count >= 1, got 0",
    ),
    (
        "eval-batch-size-zero",
        "evaluation batch size 0",
        [*RUN, "--set", "data.eval_batch_size=0"],
        "eval_batch_size must be >= 1",
    ),
    (
        "val-empty-select-best",
        "select: best without a validation split",
        [*RUN, "--set", "data.val_size=0", "--set", "select=best"],
        "select=best need.* a validation split",
    ),
    (
        "val-rounds-to-zero",
        "a validation fraction smaller than one sample",
        [*RUN, "--set", "data.val_size=0.0001"],
        "rounds to 0 validation samples",
    ),
    (
        "idx-one-class",
        "IDX data whose labels are all one class",
        [*RUN, "--set", "data.name=idx", "--set", "data.root={oneclass}"],
        "a classifier needs at least 2",
    ),
    (
        "idx-stray-label",
        "one stray label 300 among 0-3",
        [*RUN, "--set", "data.name=idx", "--set", "data.root={stray}"],
        r"class\(es\) 4-299 of 0..300 never occur",
    ),
    (
        "csv-not-utf8",
        "a CSV file that is not UTF-8",
        [*RUN, "--set", "data.name=csv", "--set", "data.options={path: '{tmp}/latin.csv', target: label}"],
        r"not utf-8 text \(byte 0xe9",
    ),
    (
        "yaml-duplicate-key",
        "a recipe key given twice",
        ["run", "{tmp}/dup.yaml", "--out", "{tmp}/out"],
        r"line 3, column 1: key 'seed' appears twice \(first at line 1\)",
    ),
    (
        "yaml-not-utf8",
        "a recipe that is not UTF-8",
        ["run", "{tmp}/latin.yaml", "--out", "{tmp}/out"],
        r"is not UTF-8 text \(byte 0xe9",
    ),
    (
        "recipe-path-too-long",
        "a path longer than the system allows",
        ["run", "{tmp}/" + "y" * 300 + ".yaml", "--out", "{tmp}/out"],
        "path too long: .* the system allows 255 per name",
    ),
    (
        "info-report-truncated",
        "info on a run whose report.json was cut off",
        ["info", "{truncreport}"],
        "report.json is not valid JSON",
    ),
]


def fill(arg: str, values: dict) -> str:
    """Replace the ``{name}`` placeholders above (and only those: YAML braces stay)."""
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg
