// The editors, one per definition kind, like the server's plugin registry: each module in
// editors/ calls register(kind, editor) when imported, and main.js looks the page's kind up.
// An editor is an object with (all optional):
//   context: names an expression may start with on this kind (completion)
//   start(b): load what it needs (palettes, options) and wire its own controls, before the draft
//   loaded(b, data): the draft arrived (before the first render)
//   render(b): draw the model
//   saved(b): a draft save came back (previews)
//   candidates(b): completion candidates from the model
//   publishNotes(b, impact): extra lines for the publish dialog (nodes)
//   sentenceContext(b): the words a condition of this kind is shown in (core/sentence.js)
// Nothing outside this registry switches on a kind.

const editors = new Map();

export function register(kind, editor) {
  if (editors.has(kind)) throw new Error(`an editor for ${kind} is registered twice`);
  editors.set(kind, editor);
}

export function editorFor(kind) {
  return editors.get(kind) || {};
}

export function registeredKinds() {
  return [...editors.keys()];
}
