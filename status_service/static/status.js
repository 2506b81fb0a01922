// Refresh the page's content in place every interval: no full-page reload, so no flicker.
(function () {
  var seconds = Number(document.body.dataset.refreshSeconds) || 30;
  function refresh() {
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin", cache: "no-cache" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html");
        ["main", "header", "footer"].forEach(function (tag) {
          var now = document.querySelector(tag), fresh = next.querySelector(tag);
          if (now && fresh) { now.replaceWith(fresh); }
        });
        document.title = next.title;
      })
      .catch(function (why) {
        // Say so rather than go on showing old news as if it were fresh; the next round tries again.
        var footer = document.querySelector("footer p");
        if (footer) { footer.textContent = "Could not refresh (" + why + "): what this page shows may be out of date."; }
      })
      .finally(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
