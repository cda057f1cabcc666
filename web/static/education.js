// The education reading page: when the end of the article comes into view, tell the server
// once (POST to the page's own read address, same origin). No other behaviour; the page reads
// the same without it.
(function () {
  "use strict";
  var end = document.getElementById("edu-end");
  if (!end || !end.dataset.read) { return; }
  var sent = false;
  function done() {
    if (sent) { return; }
    sent = true;
    fetch(end.dataset.read, {method: "POST", credentials: "omit", keepalive: true})
      .catch(function () { sent = false; });
  }
  if ("IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { done(); seen.disconnect(); }
      });
    });
    seen.observe(end);
  } else {
    window.addEventListener("scroll", function () {
      if (end.getBoundingClientRect().top < window.innerHeight) { done(); }
    }, {passive: true});
  }
}());
