// extjobs dashboard: keeps the live part of a page current.
//
// The server renders every page; the element #live names an event stream
// (data-events). Each "html" event carries the new HTML of that element. A
// "gone" event means the object was removed. The browser's EventSource
// reconnects by itself when the daemon restarts; when it gives up (a 401 after
// the session ended, or an error answer) it asks for the page again each
// second until the daemon answers, and goes to the login form if it must.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var conn = document.getElementById("conn");
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }
  function show(state, text) {
    conn.className = "conn " + state;
    conn.textContent = text;
  }
  function connect() {
    var source = new EventSource(live.dataset.events);
    show("connecting", "connecting…");
    source.addEventListener("open", function () {
      show("live", "live");
    });
    source.addEventListener("html", function (event) {
      live.innerHTML = event.data;
      document.body.dataset.updated = String(Date.now());
      show("live", "live");
    });
    source.addEventListener("gone", function (event) {
      source.close();
      live.innerHTML = '<p class="error"></p>';
      live.firstChild.textContent = event.data;
      show("gone", "gone");
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused rather than cut: try again, from scratch, in a moment.
        show("offline", "reconnecting…");
        setTimeout(function () {
          // The page itself says whether the daemon is back and the session
          // still good (a redirect to the login form when it is not).
          fetch(window.location.href, { credentials: "same-origin" })
            .then(function (answer) {
              if (answer.redirected || answer.status === 401) {
                window.location.reload();
              } else {
                connect();
              }
            })
            .catch(function () {
              setTimeout(connect, 1000);
            });
        }, 1000);
      } else {
        show("offline", "reconnecting…");
      }
    });
  }
  connect();
})();
