"""The user-study kit (gatlib.userstudy, §4.2): design, export, local collection, analysis, machine raters."""
import csv
import hashlib

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gatlib import userstudy as us

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = "https://example.org/study/images/"


def make_pool(per_class=2, kinds=us.KINDS, seed=0):
    """Random images, ``per_class`` of each class for every kind (kind k is brighter than k-1, so
    real and fake can be told apart)."""
    generator = torch.Generator().manual_seed(seed)
    pool = {}
    for number, kind in enumerate(kinds):
        labels = torch.arange(10).repeat_interleave(per_class)
        images = (torch.rand(len(labels), 1, 32, 32, generator=generator) * 0.2 + 0.2 * number).clamp(0, 1)
        pool[kind] = (images, labels)
    return pool


@pytest.fixture
def realism(tmp_path):
    design = us.design_study(make_pool(), "realism", 2, seed=3)
    us.export(design, tmp_path / "realism", BASE)
    return us.load_study(tmp_path / "realism"), tmp_path


def test_design_is_balanced_shuffled_into_pages_of_nine():
    design = us.design_study(make_pool(per_class=3), "label", 2, seed=1)
    assert (design.counts().to_numpy() == 2).all() and design.counts().shape == (4, 10)
    assert len(design.manifest) == 80 and design.assignments == 3 and design.page_size == 9
    cells = design.pages.to_numpy().ravel()
    assert len(design.pages) == 9 and (cells != "").sum() == 80          # 8 full pages and one of 8
    assert sorted(cells[cells != ""]) == sorted(design.manifest.index)   # every image on exactly one page
    for image_id, row in design.manifest.iterrows():
        assert design.pages.loc[row.page_id, f"image_{row.slot}"] == image_id
    assert design.manifest.index.str.fullmatch(r"[0-9a-f]{12}").all()   # opaque ids
    first_page_kinds = design.manifest[design.manifest.page_id == "p00000"].kind
    assert first_page_kinds.nunique() > 1                                  # shuffled, not kind by kind
    again = us.design_study(make_pool(per_class=3), "label", 2, seed=1)
    assert again.manifest.equals(design.manifest)                          # seeded


def test_a_short_class_is_an_error_naming_it_unless_not_strict():
    pool = make_pool()
    images, labels = pool["style-adv"]
    pool["style-adv"] = (images[labels != 7], labels[labels != 7])
    with pytest.raises(ValueError, match=r"style-adv.*class 7"):
        us.design_study(pool, "label", 2)
    design = us.design_study(pool, "label", 2, strict=False)
    assert design.counts().loc["style-adv", "7"] == 0 and design.counts().loc["real", "7"] == 2
    with pytest.raises(ValueError, match="experiment"):
        us.design_study(pool, "colour", 2)
    with pytest.raises(ValueError, match="per_class"):
        us.design_study(pool, "label", 0)


def test_export_keeps_the_manifest_apart_from_what_raters_see(realism):
    design, root = realism
    folder = root / "realism"
    public = sorted(p.relative_to(folder / "public").as_posix() for p in (folder / "public").rglob("*") if p.is_file())
    assert "mturk_input.csv" in public and "hit_template.html" in public
    assert not any("manifest" in name for name in public) and (folder / "manifest.csv").is_file()
    table = pd.read_csv(folder / "public" / "mturk_input.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["page_id"] + [f"image_url_{k}" for k in range(1, 10)]
    assert len(table) == len(design.pages)
    assert table.image_url_1.str.startswith(BASE).all()
    text = (folder / "public" / "mturk_input.csv").read_text()
    assert not any(word in text for word in ("real", "generated", "adv"))   # nothing but ids in URLs
    for image_id, row in design.manifest.iterrows():                       # the hashes are of the files served
        data = (folder / "public" / "images" / f"{image_id}.png").read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
    template = (folder / "public" / "hit_template.html").read_text()
    assert "${image_url_9}" in template and 'name="real_9"' in template


def test_exported_images_round_trip_as_raters_see_them(tmp_path):
    design = us.design_study(make_pool(kinds=("real", "generated")), "realism", 1, seed=0)
    us.export(design, tmp_path, BASE)
    loaded = us.load_study(tmp_path)
    assert torch.equal(loaded.images, us.quantize(design.images))
    assert loaded.manifest[["kind", "label", "class_name", "page_id", "slot"]].equals(
        design.manifest[["kind", "label", "class_name", "page_id", "slot"]])
    with pytest.raises(ValueError, match="base_url"):
        us.export(design, tmp_path / "other", " ")


def test_results_are_appended_at_once_and_a_session_resumes(realism):
    design, root = realism
    results = root / "results.csv"
    alice = us.LabellingSession(design, results, "alice")
    first = alice.next_page()
    shown = len(alice.page_images(first))
    alice.submit(first, ["real"] * shown)
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and lines[0].split(",")[:3] == ["HITId", "AssignmentId", "WorkerId"]
    # a new session of the same worker (after a crash) skips the page already done
    resumed = us.LabellingSession(design, results, "alice")
    assert resumed.done_pages() == {first} and resumed.next_page() != first
    with pytest.raises(ValueError, match="already submitted"):
        resumed.submit(first, ["real"] * shown)
    with pytest.raises(ValueError, match="options"):
        resumed.submit(resumed.next_page(), ["maybe"] * 9)
    # other workers get the least-covered pages first; a page done by 3 workers is closed
    bob = us.LabellingSession(design, results, "bob")
    assert bob.next_page() != first and bob.open_pages()[-1] == first
    for worker in ("bob", "carol"):
        us.LabellingSession(design, results, worker).submit(first, ["fake"] * shown)
    assert first not in us.LabellingSession(design, results, "dave").open_pages()
    # a torn last line (crash while writing) is closed before the next append and reported as bad
    with open(results, "a") as handle:
        handle.write("p99999,torn")
    resumed.submit(resumed.next_page(), ["real"] * len(resumed.page_images(resumed.next_page())))
    analysis = us.analyse(results, design)
    assert len(analysis.bad_rows) == 1 and "unknown image id" not in analysis.bad_rows.reason[0]
    assert analysis.coverage["rows_counted"] == 4 and "no image shown" in analysis.bad_rows.reason[0]


def test_the_labelling_app_writes_one_line_per_submitted_page(realism):
    design, root = realism
    results = root / "app.csv"
    app = us.labelling_app(design, results, "erin")
    status, keyboard, grid, submit = app.children
    assert len(grid.children) == 9 and submit.disabled
    for cell in grid.children:
        cell.children[1].value = "fake"
    assert not submit.disabled
    submit.click()
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert len(rows) == 1 and rows.WorkerId[0] == "erin" and (rows.filter(like="Answer.real_") == "fake").all(axis=None)
    assert rows["Input.image_url_1"][0].startswith(BASE)
    assert "p00001" in status.value                              # the next page is shown


def frozen_clock(monkeypatch):
    """Submissions made at the same instant write the same line (the assignment id hashes the time)."""
    monkeypatch.setattr(us.time, "time", lambda: 1_700_000_000.0)
    monkeypatch.setattr(us, "_now", lambda: "2023-11-14T22:13:20Z")


def test_typing_a_page_and_pressing_enter_writes_the_line_clicking_writes(tmp_path, monkeypatch):
    frozen_clock(monkeypatch)
    design = us.design_study(make_pool(kinds=("noise-adv", "style-adv")), "label", 2, seed=4)
    page = design.pages.index[0]
    truth = [design.manifest.class_name[i] for i in design.pages.loc[page]]
    clicked, typed = tmp_path / "clicked.csv", tmp_path / "typed.csv"
    mouse = us.labelling_app(design, clicked, "erin")
    for cell, answer in zip(mouse.children[2].children, truth):
        cell.children[1].value = answer
    mouse.children[3].click()

    app = us.labelling_app(design, typed, "erin")
    status, keyboard, grid, submit = app.children
    instructions, box = keyboard.children
    assert isinstance(box, __import__("ipywidgets").Text) and not box.continuous_update and not box.disabled
    assert "Enter" in instructions.value and page in status.value
    box.value = " ".join(truth)                                   # type the nine digits, press Enter
    assert typed.read_text() == clicked.read_text()               # the same line, byte for byte
    assert len(pd.read_csv(typed, dtype=str)) == 1
    assert design.pages.index[1] in status.value and box.value == ""   # next page, box cleared
    assert all(cell.children[1].value is None for cell in grid.children) and submit.disabled


def test_a_wrong_typed_page_submits_nothing_and_says_why(tmp_path):
    design = us.design_study(make_pool(kinds=("noise-adv", "style-adv")), "label", 2, seed=4)
    results = tmp_path / "results.csv"
    status, keyboard, grid, submit = us.labelling_app(design, results, "erin").children
    box = keyboard.children[1]
    box.value = "12345678"                                        # one short
    assert not results.exists()
    assert "Not submitted" in status.value and "typed 8 answers, this page has 9 images" in status.value
    assert "Allowed characters: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in status.value
    box.value = "1234x678y"                                       # two wrong characters
    assert not results.exists() and "position 5 (&#x27;x&#x27;), position 9 (&#x27;y&#x27;)" in status.value
    assert all(cell.children[1].value is None for cell in grid.children) and submit.disabled
    box.value = "123456789"                                       # corrected: submitted
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert len(rows) == 1 and rows.filter(like="Answer.label_").iloc[0].tolist() == list("123456789")
    assert "Not submitted" not in status.value


def test_the_realism_app_takes_r_and_f(realism):
    design, root = realism
    results = root / "typed.csv"
    status, keyboard, grid, submit = us.labelling_app(design, results, "erin").children
    box = keyboard.children[1]
    assert "<b>r</b> = real" in keyboard.children[0].value
    box.value = "rfrfr0frf"
    assert not results.exists() and "position 6 (&#x27;0&#x27;)" in status.value and "r, f." in status.value
    box.value = "RFrfR frfR"                                      # case and spaces do not matter
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    expected = ["real", "fake", "real", "fake", "real", "fake", "real", "fake", "real"]
    assert len(rows) == 1 and rows.filter(like="Answer.real_").iloc[0].tolist() == expected


def test_answer_keys_are_the_digits_or_the_class_index():
    empty = pd.DataFrame()
    assert us.answer_keys(us.StudyDesign("label", us.DIGITS, empty, empty)) == {d: d for d in us.DIGITS}
    assert us.answer_keys(us.StudyDesign("realism", us.DIGITS, empty, empty)) == {"r": "real", "f": "fake"}
    names = [f"class{k}" for k in range(12)]
    keys = us.answer_keys(us.StudyDesign("label", tuple(names), empty, empty))
    assert list(keys) == list("0123456789ab") and list(keys.values()) == names
    assert us.answer_keys(us.StudyDesign("label", tuple(f"c{k}" for k in range(37)), empty, empty)) == {}
    assert us.parse_typed_answers("0 1 B", keys, 3) == (["class0", "class1", "class11"], "")
    answers, message = us.parse_typed_answers("0c", keys, 3)
    assert answers is None and "typed 2 answers, this page has 3 images" in message
    assert "position 2 ('c')" in message and "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b" in message


def test_typed_class_indices_fill_the_buttons_with_the_class_names(tmp_path):
    names = ("airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    design = us.design_study(make_pool(per_class=1, kinds=("noise-adv",)), "label", 1, class_names=names, seed=0)
    results = tmp_path / "results.csv"
    status, keyboard, grid, submit = us.labelling_app(design, results, "erin").children
    assert "<b>3</b> = cat" in keyboard.children[0].value
    truth = [design.manifest.label[i] for i in design.pages.loc["p00000"]]
    keyboard.children[1].value = "".join(str(label) for label in truth)
    rows = pd.read_csv(results, dtype=str, keep_default_na=False)
    assert rows.filter(like="Answer.label_").iloc[0].tolist() == [names[label] for label in truth]
    # the short last page (1 image) wants one character
    keyboard.children[1].value = "33"
    assert len(pd.read_csv(results)) == 1 and "this page has 1 image " in status.value


def write_mturk_batch(path, design, rows):
    """A batch-results CSV shaped like MTurk's download: metadata columns, Input.*, Answer.*."""
    columns = (["HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "CreationTime", "MaxAssignments",
                "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime", "SubmitTime", "WorkTimeInSeconds",
                "Input.page_id"] + [f"Input.image_url_{k}" for k in range(1, 10)]
               + [f"Answer.label_{k}" for k in range(1, 10)] + ["Approve", "Reject"])
    table = design.input_table(BASE).set_index("page_id")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for number, (hit, worker, page, answers, status) in enumerate(rows):
            urls = table.loc[page].tolist()
            writer.writerow([hit, "3TYPE", "Which digit is it?", "Choose the digit, 9 images", "digits, images",
                             "$0.10", "Tue Jan 05 10:11:12 PST 2021", "3", f"ASSIGN{number:04d}", worker, status,
                             "Tue Jan 05 10:12:00 PST 2021", "Tue Jan 05 10:13:30 PST 2021", "90", page]
                            + urls + list(answers) + ["", ""])


def test_parser_counts_good_rows_and_reports_bad_ones(tmp_path):
    design = us.design_study(make_pool(per_class=1, kinds=("noise-adv", "style-adv")), "label", 1, seed=2)
    assert len(design.pages) == 3                                 # 20 images: 9 + 9 + 2
    truth = design.manifest
    def right(page):
        return [truth.class_name[i] if i else "" for i in design.pages.loc[page]]
    wrong = lambda page: [str((int(a) + 1) % 10) if a else "" for a in right(page)]  # noqa: E731
    rows = [("HIT_A", "W1", "p00000", right("p00000"), "Approved"),
            ("HIT_A", "W2", "p00000", right("p00000"), "Submitted"),
            ("HIT_A", "W3", "p00000", wrong("p00000"), "Submitted"),
            ("HIT_B", "W1", "p00001", right("p00001"), "Submitted"),
            ("HIT_B", "W2", "p00001", wrong("p00001"), "Submitted"),
            ("HIT_C", "W1", "p00002", right("p00002"), "Submitted"),
            ("HIT_C", "W2", "p00002", right("p00002"), "Submitted"),
            ("HIT_A", "W2", "p00000", wrong("p00000"), "Submitted"),                       # duplicate pair
            ("HIT_B", "W4", "p00001", right("p00001")[:4] + [""] + right("p00001")[5:], "Submitted"),  # missing
            ("HIT_B", "W5", "p00001", ["seven"] + right("p00001")[1:], "Submitted"),       # not an option
            ("HIT_C", "W6", "p00002", wrong("p00002"), "Rejected")]
    path = tmp_path / "Batch_123_batch_results.csv"
    write_mturk_batch(path, design, rows)
    # an image that is not in the study, in a second file
    second = tmp_path / "Batch_124_batch_results.csv"
    write_mturk_batch(second, design, [("HIT_B", "W6", "p00001", right("p00001"), "Submitted")])
    frame = pd.read_csv(second, dtype=str, keep_default_na=False)
    frame.loc[0, "Input.image_url_3"] = BASE + "000000000000.png"
    frame.to_csv(second, index=False)

    analysis = us.analyse([path, second], design)
    reasons = dict(zip(zip(analysis.bad_rows.source_file, analysis.bad_rows.source_row), analysis.bad_rows.reason))
    assert reasons == {(path.name, 8): "duplicate worker/HIT pair (an earlier row counts)",
                       (path.name, 9): "missing answer (slot 5)",
                       (path.name, 10): "answer not among the options (slot 1)",
                       (path.name, 11): "assignment rejected",
                       (second.name, 1): "unknown image id (slot 3)"}
    assert analysis.coverage["rows_read"] == 12 and analysis.coverage["rows_counted"] == 7
    assert len(analysis.answers) == 9 * 3 + 9 * 2 + 2 * 2
    votes = analysis.votes
    page = lambda p: votes.loc[[i for i in design.pages.loc[p] if i]]  # noqa: E731
    assert (page("p00000").raters == 3).all() and page("p00000").correct.all()      # 2 of 3 right
    assert (page("p00001").majority == "").all() and not page("p00001").correct.any()  # 1 vs 1: no majority
    assert page("p00002").correct.all()
    assert analysis.overall.loc["adversarial", "successes"] == 11 and analysis.overall.loc["adversarial", "n"] == 20
    assert analysis.by_kind.n.sum() == 20 and analysis.by_class.n.sum() == 20
    assert analysis.coverage["images_without_majority"] == 9
    assert analysis.workers.loc["W1", "agreement_with_truth"] == 1.0


def test_one_column_per_option_answers_are_folded(realism):
    design, _ = realism
    page = design.pages.index[0]
    ids = design.pages.loc[page].tolist()
    row = {"HITId": "H1", "WorkerId": "W1"}
    for k, image_id in enumerate(ids, start=1):
        row[f"Input.image_url_{k}"] = BASE + image_id + ".png"
        row[f"Answer.real_{k}.real"] = "true" if k % 2 else "false"
        row[f"Answer.real_{k}.fake"] = "false" if k % 2 else "true"
    row["Answer.real_2.real"] = "true"                                          # both ticked: bad
    analysis = us.analyse(pd.DataFrame([row]), design)
    assert "answer not among the options (slot 2)" in analysis.bad_rows.reason[0]
    row["Answer.real_2.real"] = "false"
    answers = us.analyse(pd.DataFrame([row]), design).answers
    assert answers.answer.tolist() == ["real" if k % 2 else "fake" for k in range(1, 10)]


def test_wilson_interval_known_values():
    low, high = us.wilson_interval(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert np.allclose(low, [0.0, 0.2366, 0.7225], atol=1e-4)
    assert np.allclose(high, [0.2775, 0.7634, 1.0], atol=1e-4)
    low, high = us.wilson_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match="between 0 and n"):
        us.wilson_interval(3, 2)


def test_fleiss_kappa_on_the_classic_example():
    # Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert us.fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)
    assert us.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert np.isnan(us.fleiss_kappa([[3, 0], [3, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        us.fleiss_kappa([1, 2, 3])


def test_machine_raters_end_to_end(realism):
    design, root = realism
    manifest = design.manifest
    real_images = design.images[torch.tensor((manifest.kind == "real").to_numpy())]
    fake_images = design.images[torch.tensor((manifest.kind == "generated").to_numpy())]
    raters = us.train_realism_raters(real_images, fake_images, seeds=(0, 1, 2), steps=30, batch_size=8)
    results = us.rate_with_machines(design, {n: us.realism_rater(m) for n, m in raters.items()},
                                    root / "machine.csv")
    analysis = us.analyse(results, design)
    assert analysis.bad_rows.empty
    assert analysis.coverage["images_with_all_assignments"] == len(manifest) == 80
    assert set(analysis.workers.index) == {f"machine:discriminator-s{s}" for s in range(3)}
    assert set(analysis.by_kind.index) == set(us.KINDS)
    assert analysis.by_kind.loc["generated", "difference_from_generated"] == 0
    assert analysis.by_kind.loc["real", "rate"] > analysis.by_kind.loc["generated", "rate"]  # learnt something
    # the label experiment with a rater that knows the truth, and one that always says 0
    label_design = us.design_study(make_pool(kinds=("noise-adv", "style-adv")), "label", 2, seed=5)
    truth = [label_design.class_names[c] for c in label_design.manifest.label]
    raters = {"oracle": lambda images: truth, "zero-a": lambda images: ["0"] * len(images),
              "zero-b": lambda images: ["0"] * len(images)}
    results = us.rate_with_machines(label_design, raters, root / "labels.csv")
    analysis = us.analyse(results, label_design)
    assert analysis.by_class.loc["0", "rate"] == 1.0 and analysis.by_class.drop("0").rate.eq(0).all()
    assert analysis.overall.loc["adversarial", "rate"] == pytest.approx(0.1)
    assert analysis.workers.loc["machine:oracle", "agreement_with_truth"] == 1.0
    with pytest.raises(ValueError, match="answers outside the options"):
        us.rate_with_machines(label_design, {"bad": lambda images: ["x"] * len(images)}, root / "bad.csv")


def test_label_raters_are_classifiers_and_c2st_tells_apart_what_differs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0))
    assert us.label_rater(model)(torch.rand(3, 1, 32, 32)) == ["9", "9", "9"]
    generator = torch.Generator().manual_seed(0)
    dark = torch.rand(60, 1, 32, 32, generator=generator) * 0.3
    bright = 0.7 + torch.rand(60, 1, 32, 32, generator=generator) * 0.3
    result = us.c2st(dark, bright, seed=0, steps=40, batch_size=16)
    assert result["accuracy"] > 0.9 and result["test_images"] == 36 and result["low"] <= result["accuracy"]
    with pytest.raises(ValueError, match="test_fraction"):
        us.c2st(dark, bright, test_fraction=1.0)
