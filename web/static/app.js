// Careloop console behaviour. No inline scripts (the CSP forbids them): everything is here.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// 打印阶段小结 / Print stage summary: a button with data-print prints the page (print CSS in
// app.css keeps the record and drops the navigation and forms).
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("[data-print]") : null;
  if (button) {
    event.preventDefault();
    window.print();
  }
});
// Devices: on a phone the navigation folds behind a "menu" button (without this script it
// simply stays open above the page).
document.documentElement.classList.add("js");
(function () {
  var toggle = document.querySelector(".nav-toggle");
  var nav = document.getElementById("side-nav");
  if (!toggle || !nav) { return; }
  toggle.addEventListener("click", function () {
    var open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
})();
