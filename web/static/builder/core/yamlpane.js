// The YAML text view under every editor: the draft's text (filled by session.showChecked on each
// save) and "apply", which saves the text and takes the body it parses to into the history.

export function wireYamlPane(b) {
  b.$("b-apply-text").addEventListener("click", async () => {
    const text = b.$("b-yaml").value;
    b.$("b-yaml").blur();
    const result = await b.save({ text });
    if (result && result.body) {
      b.undoStack.push(JSON.stringify(b.model));
      b.redoStack.length = 0;
      b.model = result.body;
      b.render();
    }
  });
}
