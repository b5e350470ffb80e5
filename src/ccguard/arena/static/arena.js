// Progressive enhancement for the attempt page: follow the attempt's events (SSE) and render the stream, the
// guard's verdict and the grade as they arrive. Without script the page refreshes itself until the attempt is done.
(function () {
  "use strict";
  const status = document.getElementById("status");
  if (!status || status.dataset.live !== "yes") return;
  const id = status.dataset.attempt;
  const source = new EventSource("/api/attempts/" + id + "/events");
  function runBox(runId) { return document.getElementById("run-" + runId); }
  function setText(el, text, cls) { el.textContent = ""; const s = document.createElement("span"); s.className = cls; s.textContent = text; el.appendChild(s); }
  source.addEventListener("run", function (e) {
    const ev = JSON.parse(e.data);
    const box = runBox(ev.run_id);
    if (box) {
      setText(box.querySelector(".verdict"), "streaming…", "pending");
      const out = box.querySelector(".response");
      out.textContent = "";
      out.dataset.chars = "0";
    }
  });
  source.addEventListener("delta", function (e) {
    const ev = JSON.parse(e.data);
    const box = runBox(ev.run_id);
    if (!box) return;
    const out = box.querySelector(".response");
    if (ev.chars !== undefined && !ev.text) { out.dataset.chars = String(Number(out.dataset.chars || 0) + ev.chars); out.textContent = "(" + out.dataset.chars + " characters released; shown after grading)"; }
    else { out.textContent += ev.text; }
  });
  source.addEventListener("verdict", function (e) {
    const ev = JSON.parse(e.data);
    const box = runBox(ev.run_id);
    if (!box) return;
    if (ev.blocked) {
      let msg = "Blocked by the " + ev.stage + " classifier";
      if (ev.category) msg += " (" + ev.category + ")";
      if (ev.stage === "output") msg += " after " + ev.released_chars + " characters";
      setText(box.querySelector(".verdict"), msg, "blocked");
    } else {
      setText(box.querySelector(".verdict"), "Not blocked; grading…", "passed");
    }
  });
  source.addEventListener("grade", function (e) {
    const ev = JSON.parse(e.data);
    const box = runBox(ev.run_id);
    if (!box) return;
    const g = box.querySelector(".grade");
    g.textContent = "Grade: " + ev.level + (ev.passed ? " — success" : "") + " (" + ev.grader + ")";
    setText(box.querySelector(".verdict"), "Not blocked", "passed");
  });
  source.addEventListener("hide", function (e) {
    const ev = JSON.parse(e.data);
    const box = runBox(ev.run_id);
    if (box) setText(box.querySelector(".response"), "Hidden: this response got past the guard and was graded a success. Admins review it.", "hidden-response");
  });
  source.addEventListener("done", function (e) {
    source.close();
    const ev = JSON.parse(e.data);
    // The server-rendered page now has the whole attempt (reload only once it is stored as ended, never in a loop).
    if (ev.status !== "running") window.location.reload();
  });
})();
