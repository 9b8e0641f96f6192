"""The README's main job: train on the embedded digits, convert, verify, report."""

import json

from ge2mst.cli import main


def test_quickstart_default_trains_converts_and_is_exact(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(["quickstart", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    v = report["verify"]
    assert v["ann_accuracy"] >= 0.90  # the embedded default really learns
    assert v["snn_accuracy"] == v["ann_accuracy"]
    assert v["prediction_agreement"] == 1.0 and v["code_mismatches"] == 0
    assert v["max_spikes_per_neuron"] <= report["groups"]
    assert report["history"][-1]["p"] == 1.0  # the last epochs train the converted network
    e = report["energy"]
    assert e["sops"] > 0 and e["energy_mj"] < e["ann_energy_mj"]
    assert e["sops"] <= e["sops_upper_bound"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["verify"] == v
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "ge2mst_cnn_tiny.safetensors").is_file()
    # the saved checkpoint verifies again from the command line
    code = main(["verify", "--checkpoint", str(out / "ge2mst_cnn_tiny.safetensors"),
                 "--data", "digits", "--json", "--strict"])
    again = json.loads(capsys.readouterr().out)
    assert code == 0 and again["snn_accuracy"] == v["snn_accuracy"]


def test_quickstart_is_repeatable_with_a_seed(tmp_path, capsys):
    reports = []
    for run in ("a", "b"):
        main(["quickstart", "--out", str(tmp_path / run), "--epochs", "2", "--train-limit", "200",
              "--limit", "100", "--json", "--seed", "3"])
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["history"] == reports[1]["history"]
    assert reports[0]["energy"]["sops"] == reports[1]["energy"]["sops"]


def test_quickstart_resizes_the_images_to_img_size(tmp_path, capsys):
    code = main(["quickstart", "--out", str(tmp_path / "q"), "--epochs", "1", "--train-limit", "100",
                 "--limit", "40", "--img-size", "12", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["image_size"] == [12, 12] and report["exact"] is True


def test_the_summary_points_at_each_shipped_model(monkeypatch):
    from ge2mst.cli import quickstart

    monkeypatch.setattr("ge2mst.models.pretrained.shipped_weights", lambda: {
        "ge2mst_cifar_tiny": {"snn_top1": 0.8612, "test_images": 5000, "data": "cifar10"}})
    (line,) = quickstart.shipped_hint()
    assert "86.12% on 5,000 test images" in line
    assert line.endswith("ge2mst eval --model ge2mst_cifar_tiny --pretrained --data cifar10")
    monkeypatch.setattr("ge2mst.models.pretrained.shipped_weights", lambda: {})
    assert quickstart.shipped_hint() == []


def _overlaps(box, boxes) -> list:
    return [b for b in boxes if box.overlaps(b)]


def test_the_figure_legends_cover_no_bar_and_no_marker(tmp_path, capsys):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import Bbox

    from ge2mst.training import quickstart

    main(["quickstart", "--out", str(tmp_path / "q"), "--epochs", "2", "--train-limit", "200",
          "--limit", "100", "--json", "--seed", "3"])
    report = json.loads(capsys.readouterr().out)

    def covered(onto_the_tallest_marker: bool = False) -> list:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        try:
            quickstart.draw_report(report, fig, axes)
            ax = axes[1]
            points = ax.collections[0].get_offsets()
            if onto_the_tallest_marker:  # the control: a legend where the old figure had it
                x, y = points[int(np.argmax(points[:, 1]))]
                ax.legend(fontsize=8, loc="center", bbox_to_anchor=(x, y),
                          bbox_transform=ax.transData)
            fig.tight_layout()
            fig.canvas.draw()
            legend = ax.get_legend().get_window_extent()
            bars = [p.get_window_extent() for p in ax.patches if p.get_height() > 0]
            marks = ax.collections[0].get_offset_transform().transform(points)
            half = 600 ** 0.5 / 2 * fig.dpi / 72  # the "_" marker, s = 600 points^2
            marks = [Bbox([[x - half, y - 1], [x + half, y + 1]]) for x, y in marks]
            return _overlaps(legend, bars) + _overlaps(legend, marks)
        finally:
            plt.close(fig)

    assert covered() == []
    assert covered(onto_the_tallest_marker=True)  # the check sees a legend over the data
