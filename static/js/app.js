// Small static listeners only: the CSP forbids inline scripts and eval.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');

  // htmx requests carry the CSRF token as a header (a token on <body hx-headers> goes stale).
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (csrf) { event.detail.headers["X-CSRFToken"] = csrf.content; }
  });

  // The top bar on a phone: "Menu" shows and hides the links folded behind it (app.css, "the top bar on a phone").
  var menuToggle = document.querySelector(".menu-toggle");
  if (menuToggle) {
    menuToggle.addEventListener("click", function () {
      var open = menuToggle.getAttribute("aria-expanded") !== "true";
      menuToggle.setAttribute("aria-expanded", open ? "true" : "false");
      document.getElementById(menuToggle.getAttribute("aria-controls")).classList.toggle("open", open);
    });
  }

  // A page sent back with a form's errors: the keyboard starts on the first field to correct, whose description
  // says what is wrong, and not on the field the page autofocuses (the e-mail field when the password was wrong).
  var firstInvalid = document.querySelector("main [aria-invalid=true]");
  if (firstInvalid) { firstInvalid.focus(); }

  // A wide table or chart scrolls sideways in its box on a narrow screen: the box then takes the keyboard's focus,
  // so that the arrow keys scroll it (WCAG 2.1.1), and is no extra Tab stop where it fits.
  function keyboardScrollableBoxes() {
    document.querySelectorAll(".table-wrap, .chart-scroll").forEach(function (box) {
      if (box.scrollWidth > box.clientWidth) { box.setAttribute("tabindex", "0"); } else { box.removeAttribute("tabindex"); }
    });
  }
  keyboardScrollableBoxes();
  window.addEventListener("resize", keyboardScrollableBoxes);
  document.body.addEventListener("htmx:afterSettle", keyboardScrollableBoxes);

  // The desk: one code field that a USB scanner types into (the QR's URL, then Enter) and a keyboard
  // does everything. Focus comes back to the code field after each action, so that the next scan lands there.
  function codeField() { return document.getElementById("code"); }
  function backToCode(select) {
    var code = codeField();
    if (!code) { return; }
    code.focus();
    if (select) { code.select(); }
  }
  function triggerOf(detail) {
    var trigger = detail.triggeringEvent || (detail.requestConfig && detail.requestConfig.triggeringEvent);
    return trigger ? trigger.type : "";
  }

  // A scanner types the URL and Enter: the form's submit and the debounced input trigger would both look
  // the code up, and the second answer would wipe a friend form already being filled. Enter on a code whose
  // friend form is already shown goes on to that form; any other Enter asks again (a card activated since).
  var lastLookup = null;
  document.body.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("#code-form");
    var code = codeField();
    if (!form || !code) { return; }
    var submitted = triggerOf(event.detail) === "submit";
    if (code.value === lastLookup) {
      var first = document.querySelector("#desk-panel [data-focus-first]");
      if (!submitted || first) {
        event.preventDefault();
        if (submitted) { first.focus(); }
        return;
      }
    }
    lastLookup = code.value;
  });

  // A receipt puts its redemption on top of the recent list: the list keeps the ten newest, as drawn by the server.
  var RECENT_ROWS = 10;
  document.body.addEventListener("htmx:afterSettle", function () {
    var rows = document.querySelectorAll("#recent-rows > tr");
    for (var i = RECENT_ROWS; i < rows.length; i++) { rows[i].remove(); }
  });

  document.body.addEventListener("htmx:afterSettle", function (event) {
    var elt = event.detail.elt;
    var code = codeField();
    if (!code || !elt || !elt.matches || !(elt.matches("#desk-panel") || elt.matches("tr[id^=recent-]"))) { return; }
    // A row of the recent list is a bare <tr> (no room for an out-of-band part): its message is said from here.
    var said = elt.matches("tr") && elt.querySelector(".row-message:not([role=alert])");
    var status = document.getElementById("desk-status");
    if (said && status) { status.textContent = said.textContent; }
    // After a redemption, a spend or a referral sent for review: emptied, for the next patient.
    if (elt.matches("[data-next-patient]") || elt.querySelector("[data-next-patient]")) {
      code.value = ""; lastLookup = ""; code.focus(); return;
    }
    // A form that came back with errors: the first field to correct.
    var invalid = elt.querySelector("input[aria-invalid=true]");
    if (invalid) { invalid.focus(); return; }
    var typing = triggerOf(event.detail) === "input";
    // A scanned (or submitted) code that needs the friend's details: straight to them. While the code is
    // being typed, the cursor stays in it (Enter then moves on).
    var first = elt.querySelector("[data-focus-first]");
    if (first && !typing) { first.focus(); return; }
    // A refusal, a voucher looked up, a visit marked, a server error: back in the code field. Selected, so
    // that the next scan replaces it, unless the code is still being typed.
    if (!(typing && document.activeElement === code)) { backToCode(true); }
  });

  // A scan into the friend's form (a URL and Enter in the name field) is a code, not a name: it goes to the
  // code field and is looked up there, instead of registering a friend called "http://…".
  // Escape anywhere in the panel goes back to the code field, and so does typing (or a scan) while no field has
  // the focus (a button, a link, the page after a click): the characters land in the code field, and the
  // scan's Enter looks the code up instead of pressing whatever button had the focus.
  function isField(element) {
    return element.isContentEditable || element.tagName === "TEXTAREA" || element.tagName === "SELECT" ||
      (element.tagName === "INPUT" && !/^(button|submit|reset|checkbox|radio|file|image)$/.test(element.type));
  }
  document.addEventListener("keydown", function (event) {
    var code = codeField();
    var field = event.target;
    if (!code) { return; }
    if (!isField(field) && event.key.length === 1 && event.key !== " " &&
        !event.ctrlKey && !event.metaKey && !event.altKey) { code.focus(); code.select(); return; }
    if (!field.closest || !field.closest("#desk-panel")) { return; }
    if (event.key === "Escape") { event.preventDefault(); backToCode(true); return; }
    if (event.key !== "Enter" || field.tagName !== "INPUT" || !/^\s*https?:\/\//i.test(field.value)) { return; }
    event.preventDefault();
    code.value = field.value.trim();
    field.value = "";
    code.focus();
    if (code.form.requestSubmit) { code.form.requestSubmit(); } else { htmx.trigger(code.form, "submit"); }
  });

  // A server error is shown in #request-error (the server retargets its own error answers there), above the desk's
  // panel: the form stays as it was, with what was typed and its idempotency key, so pressing again sends the same
  // form and nothing is done twice. The message goes when the next request starts.
  function errorSlot() { return document.getElementById("request-error"); }
  document.body.addEventListener("htmx:beforeRequest", function () {
    var slot = errorSlot();
    if (slot) { slot.replaceChildren(); }
  });
  function fromDesk(elt) {
    return elt && elt.closest && (elt.closest("#desk-panel") || elt.closest("#code-form") ||
                                  elt.closest("#recent-redemptions"));
  }
  function sayNoAnswer() {
    var slot = errorSlot();
    var status = document.getElementById("desk-status");
    if (!slot || !status) { return; }
    var alert = document.createElement("div");
    alert.className = "alert alert-bad";
    alert.setAttribute("role", "alert");
    alert.textContent = status.getAttribute("data-no-answer");
    slot.replaceChildren(alert);
  }
  // No answer at all (network down, server gone): say so above the panel, which stays.
  function noAnswer(event) {
    if (fromDesk(event.detail.elt)) { sayNoAnswer(); }
  }
  document.body.addEventListener("htmx:sendError", noAnswer);
  document.body.addEventListener("htmx:timeout", noAnswer);
  // An error page that is not the app's (a proxy's 502, gunicorn's bare 500 after killing a stuck worker) has no
  // HX-Retarget: it must not replace the desk's panel either.
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status >= 500 && !xhr.getResponseHeader("HX-Retarget") && fromDesk(event.detail.elt)) {
      event.detail.shouldSwap = false;
      sayNoAnswer();
    }
  });

  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-print]");
    if (target) { event.preventDefault(); window.print(); return; }
    var share = event.target.closest("[data-share-url]");
    if (share) { event.preventDefault(); shareLink(share); return; }
    var copy = event.target.closest("[data-copy-url]");
    if (copy) { event.preventDefault(); copyLink(copy); }
  });

  // The patient's invite link (progress page): Share where the phone offers it (Web Share API), Copy where
  // the clipboard is usable; without Share, the QR code is opened for a friend standing by to scan.
  // Both buttons start hidden, so that a phone without script shows only what works: the link and the QR.
  var canShare = typeof navigator.share === "function";
  var canCopy = !!(navigator.clipboard && window.isSecureContext);
  document.querySelectorAll("[data-share-url]").forEach(function (button) { button.hidden = !canShare; });
  document.querySelectorAll("[data-copy-url]").forEach(function (button) { button.hidden = false; });
  if (!canShare) {
    document.querySelectorAll("details[data-open-without-share]").forEach(function (box) { box.open = true; });
  }

  function statusFor(button) {
    var status = document.getElementById(button.getAttribute("aria-controls") || "share-status");
    return function say(text) { if (status) { status.textContent = text || ""; } };
  }

  function shareLink(button) {
    var url = button.getAttribute("data-share-url");
    var data = { title: button.getAttribute("data-share-title") || document.title, url: url };
    var text = button.getAttribute("data-share-text");
    if (text) { data.text = text; }
    navigator.share(data).catch(function (error) {
      if (error && error.name !== "AbortError") { copyLink(document.querySelector("[data-copy-url]") || button); }
    });
  }

  // Text comes from the page (data-copied, data-select), in the reader's language.
  function copyLink(button) {
    var url = button.getAttribute("data-copy-url") || button.getAttribute("data-share-url");
    var say = statusFor(button);
    function selectFallback() {
      var field = document.getElementById("share-link");
      if (field) { field.focus(); field.select(); }
      say(button.getAttribute("data-select"));
    }
    if (!canCopy) { selectFallback(); return; }
    navigator.clipboard.writeText(url).then(function () { say(button.getAttribute("data-copied")); }, selectFallback);
  }
})();
