"""Help → Quick start: the whole workflow on one short page, in the app's own words.

Kept in the app (no browser, no internet): Loupe is used offline. The text names the
tabs and buttons as they are labelled, so a reader can follow it with the window open.
"""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

QUICK_START_HTML = """
<h2>Quick start</h2>
<ol>
<li><b>Open your images.</b> On the <i>Start</i> tab choose <i>Open folder…</i> (or drop a
folder on the window), or <i>Try the sample</i>. Put each class in its own sub-folder
(<code>cats/001.jpg</code>, <code>dogs/001.jpg</code>); a classifier needs at least two
classes. Loupe only reads your folder: it never changes, moves or adds files there.</li>
<li><b>Check the labels.</b> The <i>Data</i> tab shows how each image is labelled and
split into training and validation images, with warnings (missing classes, duplicates).
Change <i>How images are labelled</i> (folder name, first letter, a pattern, a CSV file)
and <i>How images are split</i>; the preview follows as you type.</li>
<li><b>Train.</b> On the <i>Train</i> tab pick an architecture (those marked
<i>pretrained, installed</i> learn fastest), optionally press <i>Find</i> beside the
learning rate and click <i>Use this rate</i>, then <i>Start training</i>. The bar and
the time left are for the whole run; <i>Stop</i> keeps every finished epoch.</li>
<li><b>See where it goes wrong.</b> When training ends, click <i>View results</i>: the
confusion matrix, the images with the highest loss and where the model looked. Relabel
or exclude wrong images there and press <i>Retrain</i>.</li>
<li><b>Predict.</b> Drop images (or a folder) on the <i>Predict</i> tab, or paste one with
Ctrl+V.</li>
<li><b>Keep the model.</b> The <i>Models</i> tab lists every run: use, resume or delete
one, pin a model to the project, <i>Save model as…</i> a single <code>.loupe</code> file
or export ONNX. Reopening the folder later brings its model back.</li>
</ol>
<p>Missing pretrained weights? Use <i>Import…</i> (a <code>.safetensors</code> or
<code>.pth</code> file) or <i>Download…</i> beside the architecture on the <i>Train</i>
tab.</p>
"""


class QuickStartDialog(QDialog):
    """A non-modal window with :data:`QUICK_START_HTML`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Loupe — Quick start")
        self.text = QTextBrowser(self)
        self.text.setOpenExternalLinks(False)
        self.text.setHtml(QUICK_START_HTML)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        self.resize(620, 560)
