// Every page: one the browser restores from its back/forward cache shows the lab as it was when the page was
// left (a list without the run just started, a scan still "running"), so it is fetched again instead.
window.addEventListener("pageshow", (e) => { if (e.persisted) window.location.reload(); });
