// Fields whose stored answers publishing would orphan (removed) or retype, in words: the
// field's label in the page's language and its type titles, never a key or a type name (the
// keys are listed apart, under "高级", by publish.js). Pure: tested in web/frontend/test/.

import { pickLabel } from "./text.js";

// ``o`` is one item of the publish check's ``impact.orphaned`` / ``impact.retyped``.
export function orphanLabel(o, locale) {
  return pickLabel(o.label, locale) || o.field;
}

export function orphanLine(o, locale, msg) {
  const label = orphanLabel(o, locale);
  if (!o.to) return msg("builder.orphan_line", { label, n: o.answers });
  return msg("builder.orphan_retyped", { label, n: o.answers,
    from: pickLabel(o.from_title, locale) || o.from, to: pickLabel(o.to_title, locale) || o.to });
}
