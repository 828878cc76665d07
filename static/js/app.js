// Small static listeners only: the CSP forbids inline scripts and eval.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');

  // htmx requests carry the CSRF token as a header (a token on <body hx-headers> goes stale).
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (csrf) { event.detail.headers["X-CSRFToken"] = csrf.content; }
  });

  // A scanner types the URL and Enter: the form's submit and the debounced input trigger would
  // both look the code up, and the second answer would wipe a friend form already being filled.
  var lastLookup = null;
  document.body.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("#code-form");
    var code = document.getElementById("code");
    if (!form || !code) { return; }
    if (code.value === lastLookup) { event.preventDefault(); return; }
    lastLookup = code.value;
  });

  // After a redemption or a spend the code field is emptied and focused for the next patient.
  document.body.addEventListener("htmx:afterSettle", function (event) {
    var done = event.detail.elt && event.detail.elt.querySelector && event.detail.elt.querySelector("[data-next-patient]");
    if (!done && event.detail.elt && event.detail.elt.matches && event.detail.elt.matches("[data-next-patient]")) { done = event.detail.elt; }
    var code = document.getElementById("code");
    if (done && code) { code.value = ""; lastLookup = ""; code.focus(); return; }
    // A form that came back with errors: put the cursor in the first field to correct.
    var first = event.detail.elt && event.detail.elt.querySelector &&
      (event.detail.elt.querySelector("input[aria-invalid=true]") || event.detail.elt.querySelector("[data-focus-first]"));
    if (first) { first.focus(); return; }
    // Still in the code field after a look-up: select it, so that the next scan replaces it.
    if (code && document.activeElement === code) { code.select(); }
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-print]");
    if (target) { event.preventDefault(); window.print(); return; }
    var share = event.target.closest("[data-share-url]");
    if (share) { event.preventDefault(); shareLink(share); }
  });

  function shareLink(button) {
    var url = button.getAttribute("data-share-url");
    var title = button.getAttribute("data-share-title") || document.title;
    var status = document.getElementById(button.getAttribute("aria-controls") || "share-status");
    function say(text) { if (status) { status.textContent = text; } }
    if (navigator.share) {
      navigator.share({ title: title, url: url }).catch(function () { /* closed by the user */ });
      return;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(url).then(function () { say(button.getAttribute("data-copied") || "Link copied."); },
        function () { selectFallback(); });
      return;
    }
    selectFallback();
    function selectFallback() {
      var field = document.getElementById("share-link");
      if (field) { field.focus(); field.select(); }
      say(button.getAttribute("data-select") || "Copy the selected link.");
    }
  }
})();
