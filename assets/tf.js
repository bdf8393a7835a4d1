// tf's pages work without this script; with it, list pages refresh their numbers in
// place while the tab is visible, and a running job's page follows its logs through the
// API's log long-poll while visible (a new line shows up about as soon as the agent
// sends it).
"use strict";

(function () {
  const main = document.getElementById("main");
  if (!main) return;
  const seconds = Number(main.dataset.refresh || 0);
  if (seconds > 0) refreshEvery(seconds * 1000);
  const live = document.getElementById("live");
  if (live && live.dataset.job) followJob(live);

  // Replaces every element marked data-live with its newer copy; forms and what the
  // reader typed stay as they are. Nothing is fetched while the tab is hidden.
  function refreshEvery(interval) {
    let timer = null;
    const schedule = () => {
      if (timer === null && !document.hidden) timer = setTimeout(refresh, interval);
    };
    async function refresh() {
      timer = null;
      if (document.hidden) return;
      try {
        const response = await fetch(location.href, { headers: { accept: "text/html" } });
        if (response.ok) {
          const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
          for (const old of document.querySelectorAll("[data-live][id]")) {
            const replacement = fresh.getElementById(old.id);
            if (replacement) old.replaceWith(document.importNode(replacement, true));
          }
        }
      } catch (error) {
        // The server is away: the next round tries again.
      }
      schedule();
    }
    document.addEventListener("visibilitychange", () => {
      if (document.hidden && timer !== null) {
        clearTimeout(timer);
        timer = null;
      }
      schedule();
    });
    schedule();
  }

  function followJob(live) {
    const job = live.dataset.job;
    const next = { output: Number(live.dataset.nextOutput), serial: Number(live.dataset.nextSerial) };
    let ended = false;
    const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

    // A hidden tab holds no long-polls: a browser allows only a few connections per
    // server, and a forgotten tab must not take them from the pages in front.
    let controller = new AbortController();
    let waiting = [];
    const whenVisible = () =>
      document.hidden ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve();
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) {
        controller.abort();
      } else {
        controller = new AbortController();
        waiting.forEach((resolve) => resolve());
        waiting = [];
      }
    });

    function append(type, phase, text) {
      let block = live.querySelector(`pre[data-type="${type}"][data-phase="${CSS.escape(phase)}"]`);
      if (!block) {
        const details = document.createElement("details");
        details.open = true;
        const summary = document.createElement("summary");
        summary.textContent = phase;
        block = document.createElement("pre");
        block.className = "log";
        block.dataset.type = type;
        block.dataset.phase = phase;
        details.append(summary, block);
        document.getElementById(`logs-${type}`).append(details);
        const section = document.getElementById(type);
        if (section) section.hidden = false;
      }
      const atBottom = block.scrollHeight - block.scrollTop - block.clientHeight < 40;
      block.append(document.createTextNode(text));
      if (atBottom) block.scrollTop = block.scrollHeight;
    }

    // The job has ended: the page as the server makes it then has the exit statuses and
    // the artifacts, so it is loaded once more.
    async function checkEnded() {
      const response = await fetch(`/v1/result/${job}?logs=false`);
      if (!response.ok) return;
      const result = await response.json();
      const state = document.getElementById("job-state");
      if (state && result.job_state) state.textContent = result.job_state;
      if (["complete", "completed", "cancelled"].includes(result.job_state) && !ended) {
        ended = true;
        location.reload();
      }
    }

    async function follow(type) {
      while (!ended) {
        await whenVisible();
        try {
          const response = await fetch(
            `/v1/result/${job}/log/${type}?start_fragment=${next[type]}&wait=25`,
            { signal: controller.signal },
          );
          if (response.ok) {
            const phases = (await response.json())[type] || {};
            for (const [phase, part] of Object.entries(phases)) {
              if (part.log_data) append(type, phase, part.log_data);
              if (part.last_fragment_number >= next[type]) next[type] = part.last_fragment_number + 1;
            }
            await checkEnded();
          } else {
            await pause(2000);
          }
        } catch (error) {
          // Hidden (aborted) or the server is away: try again when it makes sense.
          if (!document.hidden) await pause(2000);
        }
      }
    }
    follow("output");
    follow("serial");
  }
})();
