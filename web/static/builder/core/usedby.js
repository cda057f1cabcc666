// "在哪里使用 / Where it is used": the current definitions that refer to this one (their
// compilers' references, GET used-by), by title and kind, each a link to its editor. Fetched
// when the author opens the disclosure (checking every definition takes a moment).

import { el } from "../dom.js";

export function wireUsedBy(b) {
  const box = b.$("b-used");
  if (!box) return;
  let loaded = false;
  box.addEventListener("toggle", async () => {
    if (!box.open || loaded) return;
    loaded = true;
    const list = b.$("b-used-list");
    list.replaceChildren(el("li", { class: "muted", text: b.msg("builder.used_loading") }));
    const { status: code, data } = await b.api("GET", `${b.base}/used-by/${b.kind}/${b.key}`);
    if (code !== 200) { loaded = false; list.replaceChildren(el("li", { text: data.detail || String(code) })); return; }
    list.replaceChildren(...(data.length ? data.map((u) => el("li", { "data-kind": u.kind, "data-key": u.key },
      el("a", { href: `/builder/edit/${u.kind}/${u.key}?app=${encodeURIComponent(u.app)}`,
        text: b.pick(u.title) || b.pick(u.kind_title) }),
      el("small", { text: ` ${b.pick(u.kind_title)}` })))
      : [el("li", { class: "muted", text: b.msg("builder.used_nowhere") })]));
  });
}
