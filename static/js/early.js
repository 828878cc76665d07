// Loaded before the page is painted (not deferred): says scripts run, so that CSS can fold the phone's top bar
// from the first paint (.js .topbar-menu in app.css). Without scripts nothing folds and every link shows.
document.documentElement.classList.add("js");
