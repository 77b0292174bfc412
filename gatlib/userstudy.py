"""The user study of §4.2, as a kit a reader can run: design → export → collect → analyse.

The paper ran two Mechanical Turk experiments on LSUN images, **three workers per image, nine
images per page**, the majority vote of the three taken as the answer:

* **label** — 2400 noise-based and 2400 style-based adversarial images (200 per class): workers
  chose the class; 99.2 % of the majority votes matched the ground truth (style 98.7 %, noise 99.7 %);
* **realism** — the same setup with real or fake as the answer, adding 2400 real and 2400
  unperturbed generated images: 74.7 % of unperturbed generated images were judged real, 74.3 %
  of noise-based and 70.8 % of style-based adversarial ones (under 4 points below unperturbed).

This module does the same for any class-conditional generator:

1. **design** (``study_images``, ``design_study``): a balanced set of images per class and *kind*
   (``real``, ``generated``, ``noise-adv``, ``style-adv``; only *successful* adversarial examples of
   samples F classified correctly at the start), shuffled into pages of 9, each page to be done by
   3 workers. Every image gets an opaque random id; the **manifest** (id, sha256 of the PNG, kind,
   ground truth, page) stays with the researcher, raters only ever see ids in URLs.
2. **export** (``export``): ``public/images/<id>.png`` (upscaled, nearest neighbour), an MTurk input
   CSV (one row per HIT, ``image_url_1..9``, the base URL a parameter), an HTML HIT template; the
   manifest and ``study.json`` outside ``public/``.
3. **collect** — on MTurk (MaxAssignments = 3), or locally with ``labelling_app`` (ipywidgets): a
   page of 9 with buttons for the labels or real/fake, each submission appended *and flushed* as
   one line of a CSV in MTurk's batch-results layout (``HITId``, ``WorkerId``, ``AssignmentId``,
   ``Input.image_url_k``, ``Answer.label_k`` / ``Answer.real_k``), so a crash loses nothing and a
   session resumes where this worker stopped. Keyboard-friendly: the page's answers can be typed
   as one string (one key per image, ``answer_keys``) and submitted with Enter.
4. **analyse** (``analyse``): MTurk batch-results CSVs (ours or MTurk's) → majority vote per image,
   accuracy vs ground truth overall / per kind / per class, judged-real rates per kind, Wilson 95 %
   intervals, Fleiss' κ, per-worker numbers; bad rows (missing answers, unknown image ids, invalid
   answers, duplicate worker/HIT pairs, rejected assignments) are *reported* in a table and
   excluded, never counted.

**Machine raters** (the ``default`` profile, clearly a proxy for people): ``rate_with_machines``
writes the answers of models in the same results format, so they go through the same analysis:
the zoo's independent classifiers for the label experiment, small real-vs-fake CNNs
(``train_realism_raters``: trained on held-out real vs unperturbed generated images) for realism.
``c2st`` is the classifier two-sample test of chapter 09 built on the same CNN.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape as html_escape
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# experiment -> the answer field of its HIT form (results column ``Answer.<field>_<slot>``)
EXPERIMENTS = {"label": "label", "realism": "real"}
KINDS = ("real", "generated", "noise-adv", "style-adv")
ADVERSARIAL_KINDS = ("noise-adv", "style-adv")
REALISM_OPTIONS = ("real", "fake")
DIGITS = tuple(str(d) for d in range(10))
PAGE_SIZE = 9          # images per page (HIT), as in the paper
ASSIGNMENTS = 3        # workers per page, as in the paper
NO_MAJORITY = ""       # the majority of a tie (e.g. three different labels)
_TRUE = ("true", "1", "on", "yes")
_SEVERAL = "<several options ticked>"
_INVALID = "<not an option>"


def _check_experiment(experiment: str) -> str:
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {', '.join(EXPERIMENTS)}, got {experiment!r}")
    return EXPERIMENTS[experiment]


# =============================================================================== design
@dataclass
class StudyDesign:
    """One experiment of the study.

    ``manifest`` (researcher only): index ``image_id``; columns ``sha256`` (of the PNG raters see),
    ``kind``, ``label`` (ground-truth class index), ``class_name``, ``page_id``, ``slot``.
    ``pages`` (the rater view): index ``page_id``; columns ``image_1..image_{page_size}`` holding
    image ids only ("" for the empty slots of a short last page).
    ``images``: the images ``(N, C, H, W)`` in [0, 1], aligned with ``manifest`` rows (None when
    only the tables are known); ``pngs``: the PNG bytes raters see, aligned the same way.
    """
    experiment: str
    class_names: tuple
    manifest: pd.DataFrame
    pages: pd.DataFrame
    images: Tensor | None = None
    pngs: list | None = None
    page_size: int = PAGE_SIZE
    assignments: int = ASSIGNMENTS
    seed: int = 0
    scale: int = 4
    base_url: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_experiment(self.experiment)
        self.class_names = tuple(str(name) for name in self.class_names)

    @property
    def answer_field(self) -> str:
        return EXPERIMENTS[self.experiment]

    @property
    def options(self) -> tuple:
        """What a rater may answer: the class names (label) or real/fake (realism)."""
        return self.class_names if self.experiment == "label" else REALISM_OPTIONS

    def image_columns(self) -> list[str]:
        return [f"image_{k}" for k in range(1, self.page_size + 1)]

    def page_urls(self, base_url: str | None = None) -> np.ndarray:
        """The image URLs of every page (pages x page_size): ``base_url`` (default: the export's)
        + id + ``.png``, bare file names while no base URL is known, "" in empty slots."""
        base = base_url if base_url is not None else self.base_url
        prefix = _base(base) if base else ""
        ids = self.pages[self.image_columns()].to_numpy(dtype=object)
        return np.where(ids == "", "", prefix + ids.astype(str) + ".png").astype(object)

    def input_table(self, base_url: str | None = None) -> pd.DataFrame:
        """MTurk's input CSV: one row per HIT, ``page_id`` and ``image_url_1..k`` (nothing else)."""
        urls = self.page_urls(_base(base_url if base_url is not None else self.base_url))
        table = pd.DataFrame(urls, columns=[f"image_url_{k}" for k in range(1, self.page_size + 1)])
        table.insert(0, "page_id", self.pages.index.to_numpy())
        return table

    def counts(self) -> pd.DataFrame:
        """Images per kind (rows) and class (columns): the balance of the design."""
        return pd.crosstab(self.manifest.kind, self.manifest.class_name).reindex(columns=list(self.class_names),
                                                                                fill_value=0)

    def rater_images(self) -> Tensor:
        """The images exactly as raters see them (decoded from the PNGs), aligned with ``manifest``."""
        if self.pngs is None:
            raise ValueError("this design holds no PNGs: load it with load_study(folder) or make it with design_study")
        return torch.stack([decode_png(data, self.scale) for data in self.pngs])


def _base(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be a non-empty URL prefix where the images will be served, "
                         "e.g. 'https://my-bucket.s3.amazonaws.com/study/images/'")
    return base_url if base_url.endswith("/") else base_url + "/"


def quantize(images: Tensor) -> Tensor:
    """Images rounded to the 8-bit levels a PNG holds."""
    return (images.clamp(0, 1) * 255).round() / 255


def encode_png(image: Tensor, scale: int = 4) -> bytes:
    """One image ``(C, H, W)`` in [0, 1] as PNG bytes, upscaled ``scale`` times (nearest neighbour,
    so ``decode_png`` recovers the 8-bit image exactly)."""
    from PIL import Image

    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    array = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.repeat_interleave(scale, 1).repeat_interleave(scale, 2).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes, scale: int = 4) -> Tensor:
    """The image ``(C, H, W)`` in [0, 1] behind ``encode_png(image, scale)``."""
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(data)))
    array = array[::scale, ::scale]
    tensor = torch.from_numpy(array.copy()).float() / 255
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _opaque_ids(count: int, seed: int) -> list[str]:
    """``count`` distinct random 12-hex ids: they say nothing about kind, class or order."""
    rng = random.Random(seed * 7_368_787 + 17)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        candidate = f"{rng.getrandbits(48):012x}"
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


def pick_balanced(pool: dict, per_class: int, num_classes: int, seed: int = 0,
                  strict: bool = True) -> tuple[Tensor, Tensor, list[str]]:
    """``per_class`` images of every class from every kind of ``pool`` (``{kind: (images, labels)}``),
    chosen at random (seeded). ``strict``: a (kind, class) with fewer images is an error naming it;
    otherwise it contributes what it has (``StudyDesign.counts`` shows the balance)."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if not pool:
        raise ValueError("pool is empty: give {kind: (images, labels)}")
    generator = torch.Generator().manual_seed(seed)
    images, labels, kinds = [], [], []
    for kind, (kind_images, kind_labels) in pool.items():
        kind_labels = torch.as_tensor(kind_labels).long().cpu()
        if len(kind_images) != len(kind_labels):
            raise ValueError(f"pool[{kind!r}]: {len(kind_images)} images but {len(kind_labels)} labels")
        taken = 0
        for label in range(num_classes):
            where = torch.nonzero(kind_labels == label).flatten()
            if len(where) < per_class and strict:
                raise ValueError(f"pool[{kind!r}] has {len(where)} images of class {label}, per_class={per_class} "
                                 "asked for: make more (e.g. a larger oversample) or pass strict=False")
            chosen = where[torch.randperm(len(where), generator=generator)[:per_class]]
            images.append(kind_images[chosen].detach().cpu())
            labels.append(kind_labels[chosen])
            kinds += [kind] * len(chosen)
            taken += len(chosen)
        if taken == 0:
            raise ValueError(f"pool[{kind!r}] has no image of any class 0..{num_classes - 1}")
    return torch.cat(images), torch.cat(labels), kinds


def design_study(pool: dict, experiment: str, per_class: int, *, class_names: Sequence[str] = DIGITS,
                 seed: int = 0, page_size: int = PAGE_SIZE, assignments: int = ASSIGNMENTS, scale: int = 4,
                 strict: bool = True) -> StudyDesign:
    """A balanced, shuffled, paged design of one experiment (``"label"`` or ``"realism"``).

    ``pool``: ``{kind: (images, labels)}`` (see ``study_images``); the paper's label experiment
    uses the adversarial kinds only, its realism experiment all four. Images are shuffled over the
    pages (seeded); the last page is short when the count is not a multiple of ``page_size``.
    """
    _check_experiment(experiment)
    if page_size < 1 or assignments < 1:
        raise ValueError(f"page_size and assignments must be positive, got {page_size} and {assignments}")
    images, labels, kinds = pick_balanced(pool, per_class, len(class_names), seed=seed, strict=strict)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    images, labels, kinds = images[order], labels[order], [kinds[i] for i in order]
    ids = _opaque_ids(len(labels), seed)
    pngs = [encode_png(image, scale) for image in images]
    positions = np.arange(len(labels))
    page_ids = np.array([f"p{number:05d}" for number in positions // page_size])
    manifest = pd.DataFrame({
        "image_id": ids, "sha256": [hashlib.sha256(data).hexdigest() for data in pngs], "kind": kinds,
        "label": labels.numpy(), "class_name": [str(class_names[c]) for c in labels.tolist()],
        "page_id": page_ids, "slot": positions % page_size + 1}).set_index("image_id")
    cells = np.full(((len(labels) + page_size - 1) // page_size) * page_size, "", dtype=object)
    cells[:len(ids)] = ids
    pages = pd.DataFrame(cells.reshape(-1, page_size), columns=[f"image_{k}" for k in range(1, page_size + 1)],
                         index=pd.Index(pd.unique(page_ids), name="page_id"))
    return StudyDesign(experiment, tuple(class_names), manifest, pages, images=images, pngs=pngs,
                       page_size=page_size, assignments=assignments, seed=seed, scale=scale,
                       info={"per_class": per_class, "kinds": list(pool)})


def study_images(G, classifier: nn.Module, real_set, per_class: int, *, seed: int, eps: float, delta: float,
                 max_iters: int = 10, kinds: Sequence[str] = KINDS, layers: Sequence[int] | None = None,
                 oversample: int = 2, max_rounds: int = 4, batch_size: int = 250,
                 progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The images of the study, ``({kind: (images, labels)}, attack statistics)``.

    * ``real``: ``per_class`` digits of every class from ``real_set`` (an ``ImageSet``);
    * ``generated``: unperturbed ``g(y, η)`` of every class from fresh latents;
    * ``noise-adv`` / ``style-adv``: the GAT latent attack (§3.1; ``moves="noise"`` / ``"style"``,
      ``layers`` = all by default) against ``classifier``; only successes on samples ``classifier``
      got right at the start are kept (their ground truth is the conditioning class). Fresh latents
      are attacked in rounds (``per_class * oversample`` per class still short) until every class
      has ``per_class`` successes or ``max_rounds`` rounds have run; a class may stay short (see
      ``pick_balanced(strict=...)``).
    """
    from .attacks.latent import attack_batches
    from .generators.explore import generate

    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; choose among {KINDS}")
    if per_class < 1 or oversample < 1 or max_rounds < 1:
        raise ValueError(f"per_class, oversample and max_rounds must be positive, got {per_class}, {oversample}, "
                         f"{max_rounds}")
    num_classes = max(G.num_classes, 1)
    pool, stats = {}, []
    if "real" in kinds:
        chosen = []
        generator = torch.Generator().manual_seed(seed)
        for label in range(num_classes):
            where = torch.nonzero(real_set.labels == label).flatten()
            chosen.append(where[torch.randperm(len(where), generator=generator)[:per_class]])
        chosen = torch.cat(chosen)
        pool["real"] = (real_set.images[chosen], real_set.labels[chosen])
    if "generated" in kinds:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        pool["generated"] = (generate(G, labels, seed=seed * 1009 + 1), labels)
    for offset, kind in enumerate(k for k in kinds if k in ADVERSARIAL_KINDS):
        moves = kind.split("-")[0]
        have = torch.zeros(num_classes, dtype=torch.long)
        images, labels, attacked, fooled = [], [], 0, 0
        for round_number in range(max_rounds):
            short = torch.nonzero(have < per_class).flatten()
            if len(short) == 0:
                break
            batch_labels = short.repeat_interleave(per_class * oversample)
            result = attack_batches(G, classifier, batch_labels, seed=seed * 1009 + 100 * (offset + 1) + round_number,
                                    batch_size=batch_size, progress=progress, eps=eps, delta=delta, moves=moves,
                                    layers=layers, max_iters=max_iters)
            keep = result.success & result.valid
            attacked += int(result.valid.sum())
            fooled += int(keep.sum())
            images.append(result.images[keep])
            labels.append(result.labels[keep])
            have += torch.bincount(result.labels[keep], minlength=num_classes)
        pool[kind] = (torch.cat(images), torch.cat(labels))
        stats.append({"kind": kind, "moves": moves, "attacked_valid": attacked, "fooled": fooled,
                      "success_rate": fooled / attacked if attacked else float("nan"),
                      "classes_short": int((have < per_class).sum())})
    return pool, pd.DataFrame(stats, columns=["kind", "moves", "attacked_valid", "fooled", "success_rate",
                                              "classes_short"])


# =============================================================================== export
STUDY_FILE, MANIFEST_FILE = "study.json", "manifest.csv"
PUBLIC_DIR, IMAGE_DIR, INPUT_FILE, TEMPLATE_FILE = "public", "images", "mturk_input.csv", "hit_template.html"


def export(design: StudyDesign, folder: str | os.PathLike, base_url: str) -> dict:
    """Write the study to ``folder``; returns the paths written.

    ``folder/public/`` is what goes online: ``images/<id>.png``, ``mturk_input.csv`` (upload it as
    a batch of the HIT template; set MaxAssignments to ``design.assignments``), ``hit_template.html``.
    ``folder/manifest.csv`` (ground truth) and ``folder/study.json`` stay with the researcher.
    ``base_url``: where ``public/images/`` will be served, e.g. an S3 bucket's URL.
    """
    if design.pngs is None:
        raise ValueError("the design holds no images to export")
    base = _base(base_url)
    folder = Path(folder)
    images_dir = folder / PUBLIC_DIR / IMAGE_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    for image_id, data in zip(design.manifest.index, design.pngs):
        (images_dir / f"{image_id}.png").write_bytes(data)
    design.base_url = base
    design.input_table(base).to_csv(folder / PUBLIC_DIR / INPUT_FILE, index=False)
    (folder / PUBLIC_DIR / TEMPLATE_FILE).write_text(hit_template(design))
    design.manifest.to_csv(folder / MANIFEST_FILE)
    study = {"experiment": design.experiment, "class_names": list(design.class_names), "page_size": design.page_size,
             "assignments": design.assignments, "seed": design.seed, "scale": design.scale, "base_url": base,
             "info": design.info}
    (folder / STUDY_FILE).write_text(json.dumps(study, indent=2))
    return {"images": images_dir, "input_csv": folder / PUBLIC_DIR / INPUT_FILE,
            "template": folder / PUBLIC_DIR / TEMPLATE_FILE, "manifest": folder / MANIFEST_FILE,
            "study": folder / STUDY_FILE}


def hit_template(design: StudyDesign) -> str:
    """An MTurk HIT layout (crowd-html-elements) showing ``${image_url_k}`` with one required choice
    per image, named ``<field>_<k>`` so that MTurk's results hold ``Answer.<field>_<k>``."""
    field_name = design.answer_field
    if design.experiment == "label":
        question = "Which class does each image show?"
    else:
        question = "Is each image a real photograph of a handwritten digit, or generated by a computer (fake)?"
    options = "".join(f'<option value="{o}">{o}</option>' for o in design.options)
    cells = "\n".join(
        f'  <div class="cell" data-slot="{k}"><img src="${{image_url_{k}}}" width="128" height="128">'
        f'<br><select name="{field_name}_{k}" required><option value="">choose</option>{options}</select></div>'
        for k in range(1, design.page_size + 1))
    return f"""<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<style>.grid {{display: grid; grid-template-columns: repeat(3, 160px); gap: 12px}}
img {{image-rendering: pixelated; border: 1px solid #ccc}}</style>
<crowd-form answer-format="flatten-objects">
<p>{question} Answer every image on the page.</p>
<div class="grid">
{cells}
</div>
</crowd-form>
<script>/* a short last page: drop the empty slots */
document.querySelectorAll('.cell').forEach(function (cell) {{
  if (!cell.querySelector('img').getAttribute('src')) {{ cell.remove(); }}
}});</script>
"""


def load_study(folder: str | os.PathLike) -> StudyDesign:
    """The design written by ``export`` (manifest, pages from the input CSV, the PNGs)."""
    folder = Path(folder)
    for name in (STUDY_FILE, MANIFEST_FILE, f"{PUBLIC_DIR}/{INPUT_FILE}"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not an exported study: {name} is missing")
    study = json.loads((folder / STUDY_FILE).read_text())
    manifest = pd.read_csv(folder / MANIFEST_FILE, dtype={"image_id": str, "page_id": str, "class_name": str,
                                                          "sha256": str, "kind": str}).set_index("image_id")
    table = pd.read_csv(folder / PUBLIC_DIR / INPUT_FILE, dtype=str, keep_default_na=False)
    page_size = study["page_size"]
    ids = image_ids_from_urls(pd.Series(table[[f"image_url_{k}" for k in range(1, page_size + 1)]]
                                        .to_numpy(dtype=object).ravel())).to_numpy().reshape(len(table), page_size)
    pages = pd.DataFrame(ids, columns=[f"image_{k}" for k in range(1, page_size + 1)],
                         index=pd.Index(table.page_id, name="page_id"))
    pngs = [(folder / PUBLIC_DIR / IMAGE_DIR / f"{image_id}.png").read_bytes() for image_id in manifest.index]
    design = StudyDesign(study["experiment"], tuple(study["class_names"]), manifest, pages, pngs=pngs,
                         page_size=page_size, assignments=study["assignments"], seed=study["seed"],
                         scale=study["scale"], base_url=study["base_url"], info=study.get("info", {}))
    design.images = design.rater_images()
    return design


def _map_distinct(values, function) -> np.ndarray:
    """``function`` applied once per distinct value (results CSVs repeat every URL and answer many
    times), spread back over all values: an object array."""
    codes, distinct = pd.factorize(np.asarray(values, dtype=object))
    mapped = np.array([function("" if v is None else str(v)) for v in distinct] + [""], dtype=object)
    return mapped[codes]   # code -1 (a missing value) takes the trailing ""


def _image_id(url: str) -> str:
    name = url.strip().rsplit("/", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    return name[:-4] if name.lower().endswith(".png") else name


def image_ids_from_urls(urls) -> pd.Series:
    """The image id of each URL (its file name without ``.png``; "" for an empty URL)."""
    index = urls.index if isinstance(urls, pd.Series) else None
    return pd.Series(_map_distinct(urls, _image_id), index=index, dtype=object)


# =============================================================================== results files
def results_columns(experiment: str, page_size: int = PAGE_SIZE) -> list[str]:
    """The columns of a results CSV as written here: the part of MTurk's batch-results layout the
    analysis reads, plus the times MTurk records."""
    field_name = _check_experiment(experiment)
    slots = range(1, page_size + 1)
    return (["HITId", "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime", "SubmitTime",
             "WorkTimeInSeconds", "Input.page_id"] + [f"Input.image_url_{k}" for k in slots]
            + [f"Answer.{field_name}_{k}" for k in slots])


def _append_rows(path: str | os.PathLike, columns: list[str], rows: Iterable[dict]) -> None:
    """Append rows to a CSV, writing the header for a new file, then flush and fsync: a line on disk
    is a submission kept. A file that ends mid-line (a crash while writing) gets its line closed
    first, so the torn line is reported as a bad row and never merged with the next."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    prefix = ""
    if not new:
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if header != columns:
            raise ValueError(f"{path} has other columns than this experiment's results "
                             f"({header[:4]}... vs {columns[:4]}...): use another results file")
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            prefix = "" if handle.read(1) == b"\n" else "\n"
    with open(path, "a", newline="", encoding="utf-8") as handle:
        handle.write(prefix)
        writer = csv.writer(handle, lineterminator="\n")
        if new:
            writer.writerow(columns)
        writer.writerows([row.get(column, "") for column in columns] for row in rows)
        handle.flush()
        os.fsync(handle.fileno())


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def submission_row(design: StudyDesign, page_id: str, worker_id: str, answers: Sequence[str],
                   assignment_id: str | None = None, accept_time: float | None = None) -> dict:
    """One submission in MTurk's batch-results layout (``HITId`` = the page id when collected here)."""
    if page_id not in design.pages.index:
        raise ValueError(f"page_id {page_id!r} is not a page of this study")
    if not str(worker_id).strip():
        raise ValueError("worker_id must be a non-empty name")
    ids = design.pages.loc[page_id, design.image_columns()].tolist()
    shown = [i for i in ids if i]
    answers = [str(a) for a in answers]
    if len(answers) != len(shown):
        raise ValueError(f"page {page_id} shows {len(shown)} images, got {len(answers)} answers")
    wrong = [a for a in answers if a not in design.options]
    if wrong:
        raise ValueError(f"answers {wrong} are not among the options {list(design.options)}")
    urls = design.page_urls()[design.pages.index.get_loc(page_id)]
    now = time.time()
    row = {"HITId": page_id, "AssignmentId": assignment_id or hashlib.sha1(f"{page_id}|{worker_id}|{now}".encode())
           .hexdigest()[:20], "WorkerId": worker_id, "AssignmentStatus": "Submitted",
           "AcceptTime": datetime.fromtimestamp(accept_time or now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "SubmitTime": _now(), "WorkTimeInSeconds": str(int(round(now - (accept_time or now)))),
           "Input.page_id": page_id}
    answers_iter = iter(answers)
    for k, (image_id, url) in enumerate(zip(ids, urls), start=1):
        row[f"Input.image_url_{k}"] = url
        row[f"Answer.{design.answer_field}_{k}"] = next(answers_iter) if image_id else ""
    return row


def append_submission(path: str | os.PathLike, design: StudyDesign, page_id: str, worker_id: str,
                      answers: Sequence[str], accept_time: float | None = None) -> dict:
    """Validate one page's answers and append them as one line to the results CSV ``path``."""
    row = submission_row(design, page_id, worker_id, answers, accept_time=accept_time)
    _append_rows(path, results_columns(design.experiment, design.page_size), [row])
    return row


class LabellingSession:
    """The state of one worker's local session (no widgets: the app below drives it).

    ``next_page()`` picks, among the pages this worker has not done and that have fewer than
    ``design.assignments`` submissions, the one with the fewest (so three colleagues cover the
    pages evenly); ``submit`` appends a line to the results CSV at once. A new session on the same
    file resumes: pages this worker already did are skipped.
    """

    def __init__(self, study: StudyDesign | str | os.PathLike, results_path: str | os.PathLike, worker_id: str):
        self.design = study if isinstance(study, StudyDesign) else load_study(study)
        if not str(worker_id).strip():
            raise ValueError("worker_id must be a non-empty name")
        self.results_path, self.worker_id = Path(results_path), str(worker_id).strip()

    def submissions(self) -> pd.DataFrame:
        """``HITId`` and ``WorkerId`` of every submission so far."""
        if not self.results_path.exists() or self.results_path.stat().st_size == 0:
            return pd.DataFrame(columns=["HITId", "WorkerId"])
        return pd.read_csv(self.results_path, dtype=str, keep_default_na=False, usecols=["HITId", "WorkerId"])

    def done_pages(self) -> set:
        done = self.submissions()
        return set(done.HITId[done.WorkerId == self.worker_id])

    def open_pages(self) -> list[str]:
        """Pages this worker may do next, least-covered first: not done by this worker, fewer than
        ``design.assignments`` submissions so far."""
        done = self.submissions()
        counts = done.HITId.value_counts().reindex(self.design.pages.index, fill_value=0)
        mine = set(done.HITId[done.WorkerId == self.worker_id])
        available = counts[(counts < self.design.assignments) & ~counts.index.isin(mine)]
        return [str(page) for page in available.sort_values(kind="stable").index]

    def next_page(self) -> str | None:
        pages = self.open_pages()
        return pages[0] if pages else None

    def page_images(self, page_id: str) -> list[tuple[str, bytes]]:
        """``(image_id, PNG bytes)`` of the images on a page."""
        positions = self.design.manifest.index.get_indexer(
            [i for i in self.design.pages.loc[page_id, self.design.image_columns()] if i])
        return [(self.design.manifest.index[p], self.design.pngs[p]) for p in positions]

    def submit(self, page_id: str, answers: Sequence[str], accept_time: float | None = None) -> dict:
        if page_id in self.done_pages():
            raise ValueError(f"worker {self.worker_id!r} already submitted page {page_id}")
        return append_submission(self.results_path, self.design, page_id, self.worker_id, answers, accept_time)

    def progress(self) -> tuple[int, int]:
        """(pages this worker did, pages in the study)."""
        return len(self.done_pages()), len(self.design.pages)


_INDEX_KEYS = "0123456789abcdefghijklmnopqrstuvwxyz"


def answer_keys(design: StudyDesign) -> dict:
    """The key a rater types for each answer in the labelling app's answer box: ``{key: option}``.

    * realism: ``r`` = real, ``f`` = fake;
    * label, when every class name is one character (the digits ``0``-``9`` of MNIST): the name;
    * label, other class names: the class's index in ``design.class_names`` (``0``-``9``, then
      ``a``-``z`` from the 11th class on). More than 36 classes have no keys (``{}``): use the buttons.

    Keys are matched case-insensitively (they are returned lower-case)."""
    options = list(design.options)
    if design.experiment == "realism":
        return {option[0]: option for option in options}
    if all(len(option) == 1 for option in options) and len({o.lower() for o in options}) == len(options):
        return {option.lower(): option for option in options}
    if len(options) > len(_INDEX_KEYS):
        return {}
    return {_INDEX_KEYS[number]: option for number, option in enumerate(options)}


def parse_typed_answers(text: str, keys: dict, count: int) -> tuple[list[str] | None, str]:
    """A page's answers from the string typed in the answer box: one key per image, in page order
    (left to right, top to bottom); spaces are ignored and keys are case-insensitive. Returns
    ``(answers, "")``, or ``(None, message)`` naming the wrong length and/or each position whose
    character is not a key, and the allowed keys."""
    typed = "".join(str(text).split()).lower()
    allowed = ", ".join(keys)
    problems = []
    if len(typed) != count:
        problems.append(f"typed {len(typed)} answer{'s' * (len(typed) != 1)}, this page has {count} "
                        f"image{'s' * (count != 1)} (one character per image, in order)")
    wrong = [f"position {k} ({char!r})" for k, char in enumerate(typed, start=1) if char not in keys]
    if wrong:
        problems.append(f"not an answer at {', '.join(wrong)}")
    if problems:
        return None, "; ".join(problems) + f". Allowed characters: {allowed}."
    return [keys[char] for char in typed], ""


def labelling_app(study: StudyDesign | str | os.PathLike, results_path: str | os.PathLike, worker_id: str,
                  image_width: int = 96):
    """An ipywidgets app for one rater: a page of 9 images, a row of buttons under each (the class
    names, or real / fake), *Submit* once every image has an answer. Each submission is one line of
    ``results_path`` (MTurk's layout), written at once; rerun with the same file to resume.

    Keyboard path (ipywidgets has no key events): the first focusable element is an answer box;
    type the page's answers in order as one string, one character per image (see ``answer_keys``:
    the digits for digit classes, otherwise the class index; ``r`` / ``f`` for real / fake), and
    press Enter. A valid string sets the buttons and submits the page exactly as *Submit* does; a
    wrong length or character shows a message naming it in the status line and submits nothing.

    The app is ``VBox([status, VBox([instructions, answer box]), grid of images, Submit])``."""
    import ipywidgets as widgets

    session = LabellingSession(study, results_path, worker_id)
    design = session.design
    keys = answer_keys(design)
    status = widgets.HTML()
    grid = widgets.GridBox(layout=widgets.Layout(grid_template_columns=f"repeat(3, {image_width + 260}px)"))
    submit = widgets.Button(description="Submit page", button_style="primary", disabled=True)
    if design.experiment == "realism":
        legend = "<b>r</b> = real, <b>f</b> = fake"
    elif keys and all(key == option.lower() for key, option in keys.items()):
        legend = "the " + ("digit" if set(design.options) <= set(DIGITS) else "class") + " itself"
    else:
        legend = ", ".join(f"<b>{key}</b> = {html_escape(option)}" for key, option in keys.items())
    instructions = widgets.HTML(
        f"Keyboard: type one character per image, in order (left to right, top to bottom), then press "
        f"Enter: {legend}. Or use the buttons." if keys else
        "Too many classes for one key each: use the buttons.")
    typed = widgets.Text(value="", placeholder="answers for this page, then Enter", description="Answers",
                         continuous_update=False, disabled=not keys)
    state = {"page": None, "buttons": [], "started": time.time(), "header": "", "clearing": False}

    def refresh_submit(_=None):
        submit.disabled = any(b.value is None for b in state["buttons"])

    def clear_typed():
        state["clearing"] = True
        try:
            typed.value = ""
        finally:
            state["clearing"] = False

    def show_page():
        page = session.next_page()
        state["page"], state["started"] = page, time.time()
        done, total = session.progress()
        clear_typed()
        if page is None:
            grid.children, state["buttons"] = (), []
            submit.disabled = typed.disabled = True
            status.value = f"<b>{session.worker_id}</b>: all done ({done} pages). Thank you! Answers: {results_path}"
            return
        cells, buttons = [], []
        for _, data in session.page_images(page):
            choice = widgets.ToggleButtons(options=list(design.options), value=None,
                                           style={"button_width": "24px" if design.experiment == "label" else "56px"})
            choice.observe(refresh_submit, names="value")
            buttons.append(choice)
            cells.append(widgets.VBox([widgets.Image(value=data, format="png", width=image_width), choice]))
        grid.children, state["buttons"] = tuple(cells), buttons
        refresh_submit()
        state["header"] = (f"<b>{session.worker_id}</b> · page {page} · {done} of {total} pages done · "
                           + ("which digit is it?" if design.experiment == "label" else "real or fake?"))
        status.value = state["header"]

    def on_submit(_):
        session.submit(state["page"], [b.value for b in state["buttons"]], accept_time=state["started"])
        show_page()

    def on_typed(change):
        """Enter (or leaving the box) with a new string: fill the buttons, then submit as the button does."""
        if state["clearing"] or state["page"] is None or not change["new"].strip():
            return
        answers, problem = parse_typed_answers(change["new"], keys, len(state["buttons"]))
        if answers is None:
            status.value = (state["header"] + '<br><span style="color:#b00020"><b>Not submitted:</b> '
                            + html_escape(problem) + "</span>")
            return
        for button, answer in zip(state["buttons"], answers):
            button.value = answer
        submit.click()

    submit.on_click(on_submit)
    typed.observe(on_typed, names="value")
    show_page()
    return widgets.VBox([status, widgets.VBox([instructions, typed]), grid, submit])


# =============================================================================== analysis
def read_results(sources) -> pd.DataFrame:
    """MTurk batch-results CSVs (or DataFrames), concatenated as text; ``source_file`` and
    ``source_row`` (1-based data row) say where each row came from."""
    if isinstance(sources, (str, os.PathLike, pd.DataFrame)):
        sources = [sources]
    frames = []
    for number, source in enumerate(sources):
        if isinstance(source, pd.DataFrame):
            frame, name = source.fillna("").astype(str), f"frame {number}"
        else:
            if not Path(source).is_file():
                raise ValueError(f"results file {source} does not exist")
            frame = pd.read_csv(source, dtype=str, keep_default_na=False, na_filter=False)
            name = Path(source).name
        frame = frame.copy()
        frame.insert(0, "source_file", name)
        frame.insert(1, "source_row", np.arange(1, len(frame) + 1))
        frames.append(frame)
    if not frames:
        raise ValueError("no results given")
    return pd.concat(frames, ignore_index=True, sort=False).fillna("")


def _collapse_one_hot(frame: pd.DataFrame, field_name: str, page_size: int) -> pd.DataFrame:
    """Crowd forms may give one column per option (``Answer.label_3.7`` = true/false): fold them
    into ``Answer.label_3`` = ``7`` ("" when none is ticked, a marker when several are)."""
    for k in range(1, page_size + 1):
        column, prefix = f"Answer.{field_name}_{k}", f"Answer.{field_name}_{k}."
        options = [c for c in frame.columns if c.startswith(prefix)]
        if column in frame.columns or not options:
            continue
        ticked = np.column_stack([frame[c].str.strip().str.lower().isin(_TRUE).to_numpy() for c in options])
        names = np.array([c[len(prefix):] for c in options], dtype=object)
        count = ticked.sum(1)
        frame[column] = np.where(count == 1, names[ticked.argmax(1)], np.where(count == 0, "", _SEVERAL))
    return frame


def check_results(raw: pd.DataFrame, design: StudyDesign) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split results into counted answers (one row per rated image) and bad rows (one row per
    excluded submission, with the reasons). A row is bad when it lacks a worker or HIT id, was
    rejected, leaves a shown image unanswered, answers outside the options, shows an image id that
    is not in the manifest, repeats a (worker, HIT) pair of an earlier row, or rates an image this
    worker already rated in an earlier row (a re-posted HIT)."""
    field_name, size = design.answer_field, design.page_size
    raw = _collapse_one_hot(raw.copy(), field_name, size)
    url_columns = [f"Input.image_url_{k}" for k in range(1, size + 1)]
    answer_columns = [f"Answer.{field_name}_{k}" for k in range(1, size + 1)]
    missing_columns = [c for c in ["HITId", "WorkerId"] + url_columns + answer_columns if c not in raw.columns]
    if missing_columns:
        more = "..." if len(missing_columns) > 5 else ""
        raise ValueError(f"the results lack the columns {missing_columns[:5]}{more} of the {design.experiment!r} "
                         f"experiment (page size {size})")
    rows = len(raw)
    long = pd.DataFrame({"row": np.repeat(np.arange(rows), size), "slot": np.tile(np.arange(1, size + 1), rows),
                         "url": raw[url_columns].to_numpy(dtype=object).ravel(),
                         "answer": raw[answer_columns].to_numpy(dtype=object).ravel()})
    long["image_id"] = _map_distinct(long.url.to_numpy(), _image_id)
    long = long[long.image_id != ""].copy()
    canonical = {option.lower(): option for option in design.options}
    answer = pd.Series(_map_distinct(long.answer.to_numpy(), str.strip), index=long.index)
    long["answer"] = _map_distinct(answer.to_numpy(), lambda a: canonical.get(a.lower(), _INVALID))
    long["worker"] = raw.WorkerId.str.strip().to_numpy()[long.row.to_numpy()]

    def per_row(mask: pd.Series) -> np.ndarray:
        hit = np.zeros(rows, dtype=bool)
        hit[long.row.to_numpy()[mask.to_numpy()]] = True
        return hit

    def slots(mask: pd.Series) -> pd.Series:
        return long[mask].groupby("row").slot.agg(lambda s: ",".join(map(str, s)))

    missing_answer = answer == ""
    invalid_answer = ~missing_answer & (long.answer == _INVALID)
    unknown_image = ~long.image_id.isin(design.manifest.index)
    has_image = np.zeros(rows, dtype=bool)
    has_image[long.row.to_numpy()] = True
    no_ids = ((raw.WorkerId.str.strip() == "") | (raw.HITId.str.strip() == "")).to_numpy()
    flags = {
        "no worker or HIT id": no_ids,
        "assignment rejected": (raw.get("AssignmentStatus", pd.Series("", index=raw.index)).str.strip().str.lower()
                                == "rejected").to_numpy(),
        "no image shown": ~has_image,
        "missing answer": per_row(missing_answer),
        "answer not among the options": per_row(invalid_answer),
        "unknown image id": per_row(unknown_image),
        "duplicate worker/HIT pair (an earlier row counts)":
            raw.duplicated(["WorkerId", "HITId"], keep="first").to_numpy() & ~no_ids,
    }
    repeated = long.duplicated(["worker", "image_id"], keep="first") & (long.worker != "")
    flags["image already rated by this worker in an earlier row"] = per_row(repeated) & \
        ~flags["duplicate worker/HIT pair (an earlier row counts)"]
    table = pd.DataFrame(flags)
    bad = table.any(axis=1).to_numpy()
    reasons = pd.Series("", index=np.arange(rows), dtype=object)
    details = {"missing answer": slots(missing_answer), "answer not among the options": slots(invalid_answer),
               "unknown image id": slots(unknown_image)}
    for name, mask in flags.items():
        if mask.any():
            text = pd.Series(name, index=np.arange(rows), dtype=object)
            if name in details:
                text = text + (" (slot " + details[name].reindex(np.arange(rows)).fillna("") + ")")
            reasons = reasons.where(~mask, reasons.where(reasons == "", reasons + "; ") + text)
    bad_rows = raw.loc[bad, ["source_file", "source_row", "HITId", "WorkerId"]
                       + (["AssignmentId"] if "AssignmentId" in raw.columns else [])].copy()
    bad_rows["reason"] = reasons[bad].to_numpy()
    kept = long[~bad[long.row.to_numpy()]]
    answers = pd.DataFrame({"HITId": raw.HITId.to_numpy()[kept.row.to_numpy()], "WorkerId": kept.worker.to_numpy(),
                            "image_id": kept.image_id.to_numpy(), "answer": kept.answer.to_numpy()})
    answers = answers.join(design.manifest[["kind", "label", "class_name"]], on="image_id")
    return answers, bad_rows.reset_index(drop=True)


def wilson_interval(successes, n, z: float = 1.959963984540054) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (95 % by default) of ``successes`` out of ``n`` (scalars or arrays; NaN
    where ``n`` = 0)."""
    k, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("successes must lie between 0 and n")
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denominator = 1 + z ** 2 / n
        centre = (p + z ** 2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2)) / denominator
    low, high = np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def fleiss_kappa(counts) -> float:
    """Fleiss' κ of a table ``items x categories`` of how many raters chose each category. Items may
    have different numbers of raters (items with fewer than two are skipped); with equal numbers it
    is Fleiss' (1971) statistic exactly."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError(f"counts must be a 2-D table items x categories, got shape {counts.shape}")
    raters = counts.sum(1)
    counts, raters = counts[raters >= 2], raters[raters >= 2]
    if len(counts) == 0:
        return float("nan")
    agreement = ((counts ** 2).sum(1) - raters) / (raters * (raters - 1))
    shares = counts.sum(0) / raters.sum()
    chance = (shares ** 2).sum()
    if chance >= 1:
        return float("nan")   # every rater always chose the same category: κ is undefined
    return float((agreement.mean() - chance) / (1 - chance))


def majority_vote(answers: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """One row per manifest image: ``raters``, ``majority`` (the answer of more than half of them,
    ``""`` if none), ``majority_share``, kind and ground truth (unrated images have 0 raters)."""
    counts = answers.groupby(["image_id", "answer"], sort=False).size().rename("votes").reset_index()
    totals = counts.groupby("image_id").votes.sum()
    top = counts.sort_values(["image_id", "votes"], ascending=[True, False]).drop_duplicates("image_id")
    top = top.set_index("image_id")
    votes = design.manifest[["kind", "label", "class_name"]].copy()
    votes["raters"] = totals.reindex(votes.index, fill_value=0).astype(int)
    top_votes = top.votes.reindex(votes.index, fill_value=0)
    votes["majority"] = np.where(top_votes * 2 > votes.raters, top.answer.reindex(votes.index).fillna(""), NO_MAJORITY)
    votes["majority_share"] = np.where(votes.raters > 0, top_votes / votes.raters.clip(lower=1), np.nan)
    if design.experiment == "label":
        votes["correct"] = votes.majority == votes.class_name
    else:
        votes["judged_real"] = votes.majority == "real"
    return votes


def rate_table(successes: pd.Series, totals: pd.Series) -> pd.DataFrame:
    """``successes``, ``n``, ``rate`` and its Wilson 95 % interval ``low``/``high`` per index entry."""
    low, high = wilson_interval(successes.to_numpy(), totals.to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = successes.to_numpy() / totals.to_numpy()
    return pd.DataFrame({"successes": successes.to_numpy().astype(int), "n": totals.to_numpy().astype(int),
                         "rate": rate, "low": low, "high": high}, index=successes.index)


@dataclass
class StudyAnalysis:
    """What ``analyse`` returns. ``by_kind`` / ``by_class`` / ``overall``: rates with Wilson 95 %
    intervals over images with at least ``min_raters`` raters: the share of majority votes equal to
    the ground truth (label) or equal to "real" (realism; ``by_kind`` then also has
    ``answer_rate``, the share of single answers saying real, and ``difference_from_generated``).
    ``overall`` has rows ``all`` and ``adversarial`` (the adversarial kinds together: the paper's
    "overall" of the label experiment)."""
    experiment: str
    answers: pd.DataFrame
    bad_rows: pd.DataFrame
    votes: pd.DataFrame
    overall: pd.DataFrame
    by_kind: pd.DataFrame
    by_class: pd.DataFrame
    workers: pd.DataFrame
    kappa: float
    coverage: dict

    @property
    def measure(self) -> str:
        return "correct" if self.experiment == "label" else "judged_real"


def analyse(results, design: StudyDesign, min_raters: int = 1) -> StudyAnalysis:
    """Analyse results CSVs (paths, DataFrames or a list of them) of one experiment of ``design``."""
    if min_raters < 1:
        raise ValueError(f"min_raters must be at least 1, got {min_raters}")
    raw = read_results(results)
    answers, bad_rows = check_results(raw, design)
    votes = majority_vote(answers, design)
    measure = "correct" if design.experiment == "label" else "judged_real"
    counted = votes[votes.raters >= min_raters]
    hits = counted[measure].astype(int)
    by_kind = rate_table(hits.groupby(counted.kind).sum(), hits.groupby(counted.kind).size())
    by_class = rate_table(hits.groupby(counted.class_name).sum(), hits.groupby(counted.class_name).size())
    by_class = by_class.reindex([c for c in design.class_names if c in by_class.index])
    adversarial = counted.kind.isin(ADVERSARIAL_KINDS)
    overall = rate_table(pd.Series({"all": hits.sum(), "adversarial": hits[adversarial].sum()}),
                         pd.Series({"all": len(hits), "adversarial": int(adversarial.sum())}))
    if design.experiment == "realism":
        said_real = (answers.answer == "real").astype(int)
        by_kind["answer_rate"] = said_real.groupby(answers.kind).mean().reindex(by_kind.index)
        if "generated" in by_kind.index:
            by_kind["difference_from_generated"] = by_kind.rate - by_kind.rate["generated"]
    order = [k for k in KINDS if k in by_kind.index] + [k for k in by_kind.index if k not in KINDS]
    by_kind = by_kind.reindex(order)
    table = answers.groupby(["image_id", "answer"]).size().unstack(fill_value=0)
    kappa = fleiss_kappa(table.to_numpy()) if len(table) else float("nan")
    truth = answers.answer == (answers.class_name if design.experiment == "label" else "real")
    workers = pd.DataFrame({"answers": answers.groupby("WorkerId").size(),
                            ("agreement_with_truth" if design.experiment == "label" else "said_real"):
                                truth.groupby(answers.WorkerId).mean()})
    coverage = {"rows_read": len(raw), "rows_excluded": len(bad_rows), "rows_counted": len(raw) - len(bad_rows),
                "answers_counted": len(answers), "images": len(votes), "images_rated": int((votes.raters > 0).sum()),
                "images_counted": len(counted),
                "images_with_all_assignments": int((votes.raters >= design.assignments).sum()),
                "images_without_majority": int(((counted.majority == NO_MAJORITY)).sum())}
    return StudyAnalysis(design.experiment, answers, bad_rows, votes, overall, by_kind, by_class, workers, kappa,
                         coverage)


def plot_analysis(analysis: StudyAnalysis, paper: dict | None = None, ax=None, title: str | None = None):
    """Bars per kind with Wilson 95 % intervals; ``paper`` (``{kind: percent}``) adds the paper's
    human numbers as markers. Returns the axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = analysis.by_kind.reset_index(names="kind")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * len(table) + 2, 3.4))
    sns.barplot(data=table, x="kind", y="rate", hue="kind", palette="crest", legend=False, ax=ax)
    ax.errorbar(np.arange(len(table)), table.rate, yerr=[(table.rate - table.low).clip(lower=0), (table.high - table.rate).clip(lower=0)],
                fmt="none", ecolor="black", capsize=4, lw=1)
    if paper:
        xs = [i for i, kind in enumerate(table.kind) if kind in paper]
        ax.scatter(xs, [paper[table.kind[i]] / 100 for i in xs], marker="D", color="crimson", zorder=3,
                   label="paper (human raters, LSUN)")
        ax.legend(loc="best", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.set_ylabel("majority = ground truth" if analysis.experiment == "label" else "majority says real")
    ax.set_title(title or ("label experiment" if analysis.experiment == "label" else "real-vs-fake experiment"))
    return ax


# =============================================================================== machine raters
class RealismCNN(nn.Module):
    """A small real-vs-fake classifier (two strided convolutions, one logit: > 0 means real)."""

    def __init__(self, channels: int = 1, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(2 * width * 16, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1).squeeze(1)


def train_discriminator(real: Tensor, fake: Tensor, *, seed: int = 0, steps: int = 300, batch_size: int = 64,
                        lr: float = 1e-3, width: int = 16, device="cpu", progress: bool = False) -> RealismCNN:
    """A ``RealismCNN`` trained with Adam on balanced batches of ``real`` (label 1) and ``fake`` (0).
    Both are quantised to 8 bits first, as PNGs are, so the bit depth gives nothing away."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be positive and batch_size at least 2, got {steps} and {batch_size}")
    if len(real) == 0 or len(fake) == 0:
        raise ValueError(f"a discriminator needs real and fake images, got {len(real)} and {len(fake)}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = RealismCNN(real.shape[1], width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    real, fake = quantize(real), quantize(fake)
    half = batch_size // 2
    targets = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    model.train()
    for _ in tqdm(range(steps), desc=f"discriminator s{seed}", disable=not progress, leave=False):
        batch = torch.cat([real[torch.randint(len(real), (half,), generator=generator)],
                           fake[torch.randint(len(fake), (half,), generator=generator)]]).to(device)
        loss = F.binary_cross_entropy_with_logits(model(batch), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def realism_scores(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """P(real) of every image according to a ``RealismCNN`` (images quantised like PNGs)."""
    device = next(model.parameters()).device
    model.eval()
    scores = [torch.sigmoid(model(quantize(images[i:i + batch_size]).to(device))).cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(scores) if scores else torch.empty(0)


def train_realism_raters(real: Tensor, fake: Tensor, seeds: Sequence[int] = (0, 1, 2), **train_kwargs) -> dict:
    """Machine raters for the realism experiment: one ``RealismCNN`` per seed, trained on held-out
    real images vs *unperturbed* generated images (never on the study's own images)."""
    if not seeds:
        raise ValueError("seeds is empty: give one seed per machine rater")
    return {f"discriminator-s{seed}": train_discriminator(real, fake, seed=seed, **train_kwargs) for seed in seeds}


def c2st(real: Tensor, fake: Tensor, *, seed: int = 0, test_fraction: float = 0.3, **train_kwargs) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab, 2017): a ``RealismCNN`` trained on part of
    ``real`` vs ``fake`` (equal numbers of each), its accuracy on the held-out rest. 0.5 = the two
    sets are indistinguishable to it; 1.0 = always told apart. Returns the accuracy, its Wilson 95 %
    interval and the sizes."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    count = min(len(real), len(fake))
    test = int(round(count * test_fraction))
    if test < 1 or count - test < 1:
        raise ValueError(f"c2st needs images to train and to test on: {len(real)} real and {len(fake)} fake "
                         f"with test_fraction={test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    real = real[torch.randperm(len(real), generator=generator)[:count]]
    fake = fake[torch.randperm(len(fake), generator=generator)[:count]]
    model = train_discriminator(real[test:], fake[test:], seed=seed, **train_kwargs)
    said_real = torch.cat([realism_scores(model, real[:test]) > 0.5, realism_scores(model, fake[:test]) <= 0.5])
    correct = int(said_real.sum())
    low, high = wilson_interval(correct, 2 * test)
    return {"accuracy": correct / (2 * test), "low": float(low), "high": float(high), "test_images": 2 * test,
            "train_images": 2 * (count - test)}


def label_rater(model: nn.Module, class_names: Sequence[str] = DIGITS) -> Callable[[Tensor], list]:
    """A machine rater of the label experiment: the model's predicted class name."""
    from .classifiers import predict

    return lambda images: [str(class_names[p]) for p in predict(model, images).tolist()]


def realism_rater(discriminator: nn.Module, threshold: float = 0.5) -> Callable[[Tensor], list]:
    """A machine rater of the realism experiment: "real" when P(real) > ``threshold``."""
    return lambda images: ["real" if s > threshold else "fake" for s in realism_scores(discriminator, images).tolist()]


def rate_with_machines(design: StudyDesign, raters: dict, results_path: str | os.PathLike,
                       prefix: str = "machine:") -> Path:
    """Every page answered by every rater (``{name: rater(images) -> answers}``), appended to
    ``results_path`` in the same MTurk layout as people's answers (``WorkerId`` = ``prefix + name``:
    a machine proxy, never to be mistaken for a person). The raters see the images as people do
    (decoded from the PNGs)."""
    if not raters:
        raise ValueError("raters is empty")
    images = design.rater_images()
    ids = design.pages[design.image_columns()].to_numpy(dtype=object)
    positions = design.manifest.index.get_indexer(ids.ravel()).reshape(ids.shape)
    urls = design.page_urls()
    columns = results_columns(design.experiment, design.page_size)
    now = _now()
    rows = []
    for name, rater in raters.items():
        answers = np.array(list(rater(images)), dtype=object)
        wrong = set(answers) - set(design.options)
        if len(answers) != len(images) or wrong:
            raise ValueError(f"rater {name!r} gave {len(answers)} answers for {len(images)} images"
                             + (f" and answers outside the options: {sorted(wrong)[:5]}" if wrong else ""))
        page_answers = np.where(positions >= 0, answers[np.clip(positions, 0, None)], "")
        for page_id, page_urls, page_row in zip(design.pages.index, urls, page_answers):
            row = {"HITId": page_id, "AssignmentId": f"{prefix}{name}:{page_id}", "WorkerId": f"{prefix}{name}",
                   "AssignmentStatus": "Submitted", "AcceptTime": now, "SubmitTime": now, "WorkTimeInSeconds": "0",
                   "Input.page_id": page_id}
            for k in range(design.page_size):
                row[f"Input.image_url_{k + 1}"] = page_urls[k]
                row[f"Answer.{design.answer_field}_{k + 1}"] = page_row[k]
            rows.append(row)
    _append_rows(results_path, columns, rows)
    return Path(results_path)
