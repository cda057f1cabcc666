// Careloop form pages: live show/hide. The server decides (it evaluates the form's expressions);
// this script only asks it after each change. Everything works without it.
(function () {
  "use strict";
  // Read aloud: the browser's own speech synthesis in the page's language (zh-CN first); no
  // network. The buttons stay hidden where the browser cannot speak.
  var speech = window.speechSynthesis;
  var lang = document.body.getAttribute("data-speech-lang") || "zh-CN";
  if (speech && window.SpeechSynthesisUtterance) {
    var voice = null;
    var pickVoice = function () {
      var voices = speech.getVoices ? speech.getVoices() : [];
      voice = voices.filter(function (v) { return v.lang && v.lang.replace("_", "-").indexOf(lang) === 0; })[0] || null;
    };
    pickVoice();
    if ("onvoiceschanged" in speech) { speech.onvoiceschanged = pickVoice; }
    document.querySelectorAll("button.read-aloud").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () {
        var utterance = new window.SpeechSynthesisUtterance(button.getAttribute("data-say") || "");
        utterance.lang = lang;
        utterance.rate = 0.9;  // a little slower: older listeners
        if (voice) { utterance.voice = voice; }
        speech.cancel();
        speech.speak(utterance);
      });
    });
  }
  var form = document.getElementById("careloop-form");
  if (!form || !window.fetch) { return; }
  var timer = null;
  function refresh() {
    var data = new FormData(form);
    data.set("_action", "visible");
    fetch(form.action, { method: "POST", body: data, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (result) {
        if (!result) { return; }
        var shown = {};
        result.visible.forEach(function (k) { shown[k] = true; });
        // Choices the answers compute (an imported answerExpression): the server draws the
        // field again; it replaces the old one only when its choices changed.
        Object.keys(result.fields || {}).forEach(function (key) {
          var old = form.querySelector('.field[data-key="' + CSS.escape(key) + '"]');
          if (!old) { return; }
          var holder = document.createElement("template");
          holder.innerHTML = result.fields[key].trim();
          var fresh = holder.content.firstElementChild;
          var codes = function (el) {
            return Array.prototype.map.call(el.querySelectorAll("[data-choice], option"),
              function (c) { return c.getAttribute("data-choice") || c.value; }).join("\u0000");
          };
          if (fresh && codes(fresh) !== codes(old)) { old.replaceWith(fresh); }
        });
        form.querySelectorAll(".field[data-key]").forEach(function (el) {
          if (el.closest(".repeat-row")) { return; }
          var type = el.className;
          if (/field-(display|section)/.test(type)) { return; }
          el.hidden = !shown[el.getAttribute("data-key")];
        });
        var required = {};
        (result.required || []).forEach(function (k) { required[k] = true; });
        form.querySelectorAll(".req-if[data-req-for]").forEach(function (mark) {
          mark.hidden = !required[mark.getAttribute("data-req-for")];
        });
      })
      .catch(function () { /* keep the server-rendered state */ });
  }
  form.addEventListener("input", function (e) {
    var t = e.target;
    if (t && t.classList.contains("slider-range")) {
      var number = document.getElementById(t.dataset.for);
      if (number) { number.value = t.value; }
    }
  });
  form.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.type === "checkbox" && t.checked) {
      var group = form.querySelectorAll('input[type=checkbox][name="' + t.name + '"]');
      group.forEach(function (other) {
        if (other !== t && (t.dataset.exclusive || other.dataset.exclusive)) { other.checked = false; }
      });
    }
    if (t && t.classList.contains("slider-range")) {
      var number = document.getElementById(t.dataset.for);
      if (number) { number.value = t.value; }
    }
    clearTimeout(timer);
    timer = setTimeout(refresh, 120);
  });
  document.querySelectorAll(".signature-pad").forEach(function (canvas) {
    var ctx = canvas.getContext("2d"), drawing = false;
    var target = document.getElementById(canvas.dataset.target);
    function pos(e) { var r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
    canvas.addEventListener("pointerdown", function (e) { drawing = true; var p = pos(e); ctx.beginPath(); ctx.moveTo(p[0], p[1]); });
    canvas.addEventListener("pointermove", function (e) { if (!drawing) { return; } var p = pos(e); ctx.lineTo(p[0], p[1]); ctx.stroke(); });
    canvas.addEventListener("pointerup", function () { drawing = false; target.value = canvas.toDataURL("image/png"); });
  });
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
})();
