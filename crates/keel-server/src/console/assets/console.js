// Keel console: times in the viewer's zone, and the refresh of live regions. Pages work without it.
"use strict";
(function () {
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.title = t.getAttribute("datetime"); t.textContent = fmt.format(d); }
    }
  }
  // A region's data-refresh is its period in seconds; each new copy may change it.
  function refresh(region) {
    const period = () => (Number(region.dataset.refresh) || 10) * 1000;
    setTimeout(async function again() {
      // Not while the tab is hidden, nor while the viewer is working in the region.
      if (!document.hidden && !region.contains(document.activeElement)) {
        try {
          const answer = await fetch(location.href, { credentials: "same-origin" });
          if (answer.ok) {
            const page = new DOMParser().parseFromString(await answer.text(), "text/html");
            const fresh = page.querySelector("[data-refresh]");
            if (fresh) {
              region.innerHTML = fresh.innerHTML;
              region.dataset.refresh = fresh.dataset.refresh;
              localTimes(region);
            }
          }
        } catch (_) { /* the next round tries again */ }
      }
      setTimeout(again, period());
    }, period());
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();
