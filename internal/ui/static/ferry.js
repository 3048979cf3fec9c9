// Ferry's UI: a little script on server-rendered pages. Everything works without it; with it,
// pages follow changes as they happen and relative times stay current.
(function () {
  'use strict';

  // ferry dev prints a sign-in link /signin#token=…: the fragment never reaches a server or its
  // logs. Put it in the field and take it out of the address bar.
  var token = document.getElementById('token');
  if (token && location.hash.indexOf('#token=') === 0) {
    token.value = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, '', location.pathname + location.search);
    var submit = document.getElementById('token-submit');
    if (submit) submit.focus();
  }

  function words(ms) {
    var future = ms < 0; if (future) ms = -ms;
    var m = Math.floor(ms / 60000), h = Math.floor(ms / 3600000), d = Math.floor(ms / 86400000);
    var s = m < 1 ? 'less than a minute' : h < 1 ? (m === 1 ? '1 minute' : m + ' minutes') :
      h < 48 ? (h === 1 ? '1 hour' : h + ' hours') : (d === 1 ? '1 day' : d + ' days');
    return future ? 'in ' + s : s + ' ago';
  }
  function refreshTimes(root) {
    var times = (root || document).querySelectorAll('time[data-rel]');
    for (var i = 0; i < times.length; i++) {
      var t = Date.parse(times[i].getAttribute('datetime'));
      if (!isNaN(t)) times[i].textContent = words(Date.now() - t);
    }
  }
  setInterval(refreshTimes, 30000);

  var kinds = (document.body.getAttribute('data-live') || '').split(',').filter(Boolean);
  if (!kinds.length || !window.EventSource || !window.fetch) return;

  var status = document.getElementById('live-status');
  var timer = null, busy = false, again = false, held = false;

  // A region someone is working in (focus inside, or a comment typed) is left alone until they
  // leave it, so that an update never takes away what they are doing.
  function inUse(el) {
    if (el.contains(document.activeElement) && document.activeElement !== document.body) return true;
    var fields = el.querySelectorAll('textarea, input[type=text]');
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) return true;
    }
    return false;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { 'X-Ferry-Refresh': '1' }, credentials: 'same-origin', redirect: 'manual' })
      .then(function (resp) {
        if (resp.type === 'opaqueredirect' || resp.status === 401) { location.reload(); return null; }
        return resp.ok ? resp.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var regions = document.querySelectorAll('[data-region]');
        var updated = 0;
        held = false;
        for (var i = 0; i < regions.length; i++) {
          var el = regions[i], fresh = doc.getElementById(el.id);
          if (!fresh || fresh.innerHTML === el.innerHTML) continue;
          if (inUse(el)) { held = true; continue; }
          // A <details> with an id that someone opened (a Release's package changes) stays open.
          var opened = el.querySelectorAll('details[id][open]'), ids = [];
          for (var k = 0; k < opened.length; k++) ids.push(opened[k].id);
          el.innerHTML = fresh.innerHTML;
          for (k = 0; k < ids.length; k++) {
            var d = document.getElementById(ids[k]);
            if (d) d.open = true;
          }
          // A region's wrapper may say its state too (the timeline's dot): keep it in step.
          if (fresh.parentElement && el.parentElement && fresh.parentElement.tagName === el.parentElement.tagName) {
            el.parentElement.className = fresh.parentElement.className;
          }
          updated++;
        }
        if (updated) {
          refreshTimes(document);
          status.textContent = 'Page updated at ' + new Date().toLocaleTimeString();
          document.body.setAttribute('data-updates', String(Number(document.body.getAttribute('data-updates') || 0) + 1));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 200); }
  document.addEventListener('focusout', function () { if (held) schedule(); });

  // A form being sent (signing out, deciding) takes the page elsewhere: the stream's end must not
  // reload the page under it.
  var leaving = false;
  document.addEventListener('submit', function () { leaving = true; });
  window.addEventListener('pagehide', function () { leaving = true; });

  var source = new EventSource('/events');
  source.addEventListener('change', function (e) {
    try {
      if (kinds.indexOf(JSON.parse(e.data).kind) >= 0) schedule();
    } catch (err) { /* not an event of ours */ }
  });
  source.addEventListener('signedout', function () {
    source.close();
    if (!leaving) location.reload();
  });
  source.addEventListener('open', function () { document.body.setAttribute('data-live-connected', 'true'); });
})();
