// Careloop console behaviour. No inline scripts (the CSP forbids them): everything is here.
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
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
