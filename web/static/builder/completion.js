// Completion for expression inputs (vanilla JS, no dependencies; CSP: no inline scripts).
// attach(input, candidates) (an ES module export) gives a text input a listbox of completions
// for the word before the caret: `answers.<field key>`, `scores.<key>`, the context names and the
// function library (name, signature and a one-line description from the function registry).
// ↓/↑ move, Enter or Tab accept, Escape closes, Ctrl+Space opens it on an empty word.
// `candidates()` returns [{value, detail, insert?}] and is called on every keystroke, so it always
// reflects the current draft (a field added a moment ago is offered at once).
// Only the focused input completes, so one listbox serves every input on the page.
const WORD = /[A-Za-z_][A-Za-z0-9_.]*$/;
const MAX = 12;
const ID = "b-complete";
const sources = new WeakMap();  // input → its candidates()
let list = null;
let owner = null, items = [], active = -1, start = 0;

function listbox() {
  if (!list) {
    list = document.createElement("ul");
    list.id = ID;
    list.className = "b-complete";
    list.setAttribute("role", "listbox");
    list.hidden = true;
    document.body.append(list);
  }
  return list;
}
// the word before the caret, or null inside a quoted text
function word(input) {
  const caret = input.selectionStart ?? input.value.length;
  const before = input.value.slice(0, caret);
  const match = WORD.exec(before);
  start = match ? caret - match[0].length : caret;
  const quotes = (before.slice(0, start).match(/['"]/g) || []).length;
  return quotes % 2 ? null : (match ? match[0] : "");
}
function close() {
  if (list) list.hidden = true;
  if (owner) {
    owner.setAttribute("aria-expanded", "false");
    owner.removeAttribute("aria-activedescendant");
  }
  owner = null;
  active = -1;
}
function highlight(n) {
  active = n;
  [...list.children].forEach((li, i) => li.setAttribute("aria-selected", String(i === n)));
  if (n >= 0) owner.setAttribute("aria-activedescendant", `${ID}-${n}`);
}
function open(input, force) {
  const w = word(input);
  if (w === null || (!w && !force)) { close(); return; }
  const lower = w.toLowerCase();
  const all = sources.get(input)();
  const starts = all.filter((c) => c.value.toLowerCase().startsWith(lower) && c.value !== w);
  const inside = all.filter((c) => !c.value.toLowerCase().startsWith(lower)
    && c.value.toLowerCase().includes(lower));
  items = [...starts, ...inside].slice(0, MAX);
  if (!items.length) { close(); return; }
  owner = input;
  listbox().replaceChildren(...items.map((c, i) => {
    const li = document.createElement("li");
    li.id = `${ID}-${i}`;
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
  const box = input.getBoundingClientRect();
  list.style.left = `${box.left + window.scrollX}px`;
  list.style.top = `${box.bottom + window.scrollY}px`;
  list.style.minWidth = `${box.width}px`;
  list.hidden = false;
  input.setAttribute("aria-expanded", "true");
  highlight(0);
}
function accept(n) {
  const c = items[n], input = owner;
  if (!c || !input) return;
  const caret = input.selectionStart ?? input.value.length;
  const text = c.insert || c.value;
  input.value = input.value.slice(0, start) + text + input.value.slice(caret);
  const at = start + text.length;
  input.setSelectionRange(at, at);
  close();
  input.dispatchEvent(new Event("input", { bubbles: true }));
}

export function attach(input, candidates) {
  if (sources.has(input)) return;
  sources.set(input, candidates);
  input.setAttribute("autocomplete", "off");
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-expanded", "false");
  input.setAttribute("aria-controls", ID);
  input.dataset.completion = ID;
  input.addEventListener("input", (e) => { if (e.isTrusted) open(input, false); });
  input.addEventListener("keydown", (e) => {
    if (e.ctrlKey && e.key === " ") { e.preventDefault(); open(input, true); return; }
    if (owner !== input || list.hidden) return;
    if (e.key === "ArrowDown") { e.preventDefault(); highlight((active + 1) % items.length); }
    else if (e.key === "ArrowUp") { e.preventDefault(); highlight((active - 1 + items.length) % items.length); }
    else if (e.key === "Enter" || e.key === "Tab") { e.preventDefault(); accept(active); }
    else if (e.key === "Escape") { e.preventDefault(); close(); }
  });
  input.addEventListener("blur", () => setTimeout(() => { if (owner === input) close(); }, 150));
}

// a re-render replaced the input the author was completing in: open the list on the new one
export function reopen(input) {
  if (sources.has(input)) open(input, false);
}

