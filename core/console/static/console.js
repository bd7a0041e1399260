// orderpipe console: the few behaviours a plain form cannot give (no build step, no framework).
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    // Dropping files on the upload zone fills the file input; the form then posts as usual.
    var drop = document.getElementById("drop");
    var input = document.getElementById("files");
    if (drop && input) {
      var show = function () {
        var names = Array.prototype.map.call(input.files, function (f) { return f.name; });
        drop.querySelector("span").textContent = names.length ? names.join(", ") : "Drop order files here, or choose them";
      };
      ["dragenter", "dragover"].forEach(function (kind) {
        drop.addEventListener(kind, function (e) { e.preventDefault(); drop.classList.add("over"); });
      });
      ["dragleave", "drop"].forEach(function (kind) {
        drop.addEventListener(kind, function () { drop.classList.remove("over"); });
      });
      drop.addEventListener("drop", function (e) {
        e.preventDefault();
        if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
      });
      input.addEventListener("change", show);
    }
    // "Select all" on the dead-letter page.
    var all = document.getElementById("select-all");
    if (all) {
      all.addEventListener("change", function () {
        document.querySelectorAll('input[name="ids"]').forEach(function (box) { box.checked = all.checked; });
      });
    }
  });
  // Stop polling once every upload has its outcome.
  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.target && e.target.id === "uploads" && document.getElementById("all-final")) {
      e.target.removeAttribute("hx-trigger");
      e.target.removeAttribute("hx-get");
      if (window.htmx) { window.htmx.process(e.target); }
    }
  });
})();
