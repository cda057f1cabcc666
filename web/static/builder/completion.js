// Completion for expression inputs (vanilla JS, no dependencies; CSP: no inline scripts).
// window.CareloopComplete.attach(input, candidates) gives a text input a listbox of completions
// for the word before the caret: `answers.<field key>`, `scores.<key>`, the context names and the
// function library (name, signature and a one-line description from the function registry).
// ↓/↑ move, Enter or Tab accept, Escape closes, Ctrl+Space opens it on an empty word.
// `candidates()` returns [{value, detail, insert?}] and is called on every keystroke, so it always
// reflects the current draft (a field added a moment ago is offered at once).
"use strict";

(() => {
  const WORD = /[A-Za-z_][A-Za-z0-9_.]*$/;
  const MAX = 12;
  let serial = 0;
  const openers = new WeakMap();  // input → its open(force)

  function attach(input, candidates) {
    if (input.dataset.completion) return;
    serial += 1;
    const id = `b-complete-${serial}`;
    input.dataset.completion = id;
    input.setAttribute("autocomplete", "off");
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-expanded", "false");
    input.setAttribute("aria-controls", id);
    const list = document.createElement("ul");
    list.id = id;
    list.className = "b-complete";
    list.setAttribute("role", "listbox");
    list.hidden = true;
    let items = [], active = -1, start = 0;

    function word() {
      const caret = input.selectionStart ?? input.value.length;
      const before = input.value.slice(0, caret);
      const match = WORD.exec(before);
      start = match ? caret - match[0].length : caret;
      // not inside a quoted text: count the quotes before the word
      const quotes = (before.slice(0, start).match(/'/g) || []).length
        + (before.slice(0, start).match(/"/g) || []).length;
      return quotes % 2 ? null : (match ? match[0] : "");
    }
    function close() {
      list.hidden = true;
      active = -1;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }
    function highlight(n) {
      active = n;
      [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === n)));
      if (n >= 0) input.setAttribute("aria-activedescendant", `${id}-${n}`);
    }
    function open(force) {
      const w = word();
      if (w === null || (!w && !force)) { close(); return; }
      const lower = w.toLowerCase();
      const all = candidates();
      const starts = all.filter((c) => c.value.toLowerCase().startsWith(lower) && c.value !== w);
      const inside = all.filter((c) => !c.value.toLowerCase().startsWith(lower)
        && c.value.toLowerCase().includes(lower));
      items = [...starts, ...inside].slice(0, MAX);
      if (!items.length) { close(); return; }
      list.replaceChildren(...items.map((c, i) => {
        const li = document.createElement("li");
        li.id = `${id}-${i}`;
        li.setAttribute("role", "option");
        li.dataset.value = c.value;
        const code = document.createElement("code");
        code.textContent = c.value;
        li.append(code);
        if (c.detail) {
          const small = document.createElement("small");
          small.textContent = c.detail;
          li.append(" ", small);
        }
        li.addEventListener("mousedown", (e) => { e.preventDefault(); accept(i); });
        return li;
      }));
      if (!list.isConnected) document.body.append(list);
      const box = input.getBoundingClientRect();
      list.style.left = `${box.left + window.scrollX}px`;
      list.style.top = `${box.bottom + window.scrollY}px`;
      list.style.minWidth = `${box.width}px`;
      list.hidden = false;
      input.setAttribute("aria-expanded", "true");
      highlight(0);
    }
    function accept(n) {
      const c = items[n];
      if (!c) return;
      const caret = input.selectionStart ?? input.value.length;
      const text = c.insert || c.value;
      input.value = input.value.slice(0, start) + text + input.value.slice(caret);
      const at = start + text.length;
      input.setSelectionRange(at, at);
      close();
      input.dispatchEvent(new Event("input", { bubbles: true }));
    }
    openers.set(input, open);
    input.addEventListener("input", (e) => { if (e.isTrusted) open(false); });
    input.addEventListener("keydown", (e) => {
      if (e.ctrlKey && e.key === " ") { e.preventDefault(); open(true); return; }
      if (list.hidden) return;
      if (e.key === "ArrowDown") { e.preventDefault(); highlight((active + 1) % items.length); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight((active - 1 + items.length) % items.length); }
      else if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); accept(active); }
      else if (e.key === "Escape") { e.preventDefault(); close(); }
    });
    input.addEventListener("blur", () => setTimeout(close, 150));
    // the input is replaced on every re-render: drop its list with it
    const watch = new MutationObserver(() => {
      if (!input.isConnected) { list.remove(); watch.disconnect(); }
    });
    watch.observe(document.body, { childList: true, subtree: true });
  }

  // a re-render replaced the input the author was completing in: open the list on the new one
  function reopen(input) {
    const open = openers.get(input);
    if (open) open(false);
  }

  window.CareloopComplete = { attach, reopen };
})();
