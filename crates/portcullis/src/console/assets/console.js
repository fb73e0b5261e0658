// Portcullis console: the one script. Copies a new secret to the
// clipboard when its button is pressed. No framework, no network, no
// storage (nothing is kept in localStorage or sessionStorage).
(function () {
  'use strict';
  function say(el, text) {
    var out = document.getElementById(el.getAttribute('data-status'));
    if (out) { out.textContent = text; }
    el.setAttribute('data-copied', text === 'Copied' ? 'yes' : 'no');
  }
  function fallback(input) {
    // Older browsers, or a clipboard API refused by policy: select the
    // text and ask for a copy; the text stays selected for Ctrl+C.
    input.focus();
    input.select();
    try { return document.execCommand('copy'); } catch (e) { return false; }
  }
  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button[data-copy]') : null;
    if (!b) { return; }
    ev.preventDefault();
    var input = document.getElementById(b.getAttribute('data-copy'));
    if (!input) { return; }
    var text = input.value;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { say(b, 'Copied'); }, function () {
        say(b, fallback(input) ? 'Copied' : 'Press Ctrl+C to copy the selected key');
      });
    } else {
      say(b, fallback(input) ? 'Copied' : 'Press Ctrl+C to copy the selected key');
    }
  });
  // Select the whole secret when its field gets focus, for a manual copy.
  document.addEventListener('focusin', function (ev) {
    if (ev.target && ev.target.classList && ev.target.classList.contains('select-all')) { ev.target.select(); }
  });
})();
