// The page: log-in, the two screens (#/queue and #/scan/ID) and the keyboard.

import * as api from "./api.js";
import { QueueView } from "./queue.js";
import { ScanView } from "./scan.js";
import { $, toast, typingIn } from "./util.js";

const state = { user: null };

const queue = new QueueView({ open: (id) => (location.hash = `#/scan/${encodeURIComponent(id)}`) });
const scan = new ScanView({ queue, config: null });

function showSection(name) {
  for (const id of ["login-view", "queue-view", "scan-view"]) $(id).hidden = id !== `${name}-view`;
  $("nav-queue").hidden = name === "login";
  $("help-button").hidden = name === "login";
}

function showLogin(message = "") {
  state.user = null;
  queue.stop();
  $("user-name").textContent = "";
  $("logout").hidden = true;
  $("live-status").textContent = "";
  $("login-error").textContent = message;
  showSection("login");
  $("login-username").focus();
}

async function loggedIn(user) {
  state.user = user;
  scan.setUser(user);
  $("user-name").textContent = `${user.name} (${user.role})`;
  $("logout").hidden = false;
  try {
    scan.setConfig(await api.viewerConfig());
  } catch (err) {
    toast(`Could not read the viewer settings: ${err.message}`, { error: true });
  }
  queue.start();
  route();
}

function route() {
  if (!state.user) return;
  const match = location.hash.match(/^#\/scan\/([^/]+)$/);
  if (match) {
    showSection("scan");
    scan.show(decodeURIComponent(match[1]));
  } else {
    if (location.hash !== "#/queue") history.replaceState(null, "", "#/queue");
    showSection("queue");
    queue.seen();
    document.title = "CargoScan: queue";
  }
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  $("login-error").textContent = "";
  try {
    const answer = await api.auth.login(username, password);
    $("login-password").value = "";
    await loggedIn(answer.user || (await api.auth.me()));
  } catch (err) {
    $("login-error").textContent =
      err.status === 401 ? "Wrong user name or password." : `Could not log in: ${err.message}`;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api.auth.logout();
  } catch {
    // logged out anyway: the session cookie is the server's to clear
  }
  showLogin();
});

$("help-button").addEventListener("click", () => ($("help").hidden = !$("help").hidden));

window.addEventListener("hashchange", route);

document.addEventListener("keydown", (e) => {
  if (!state.user) return;
  const help = $("help");
  if (!help.hidden && (e.key === "Escape" || e.key === "?")) {
    help.hidden = true;
    e.preventDefault();
    return;
  }
  const inScan = !$("scan-view").hidden;
  const commandKey = (e.ctrlKey || e.metaKey) && e.key === "Enter";
  if (typingIn(e.target) && !commandKey && e.key !== "Escape") return;
  if (typingIn(e.target) && e.key === "Escape") {
    e.target.blur();
    e.preventDefault();
    return;
  }
  if (e.key === "?" && !scan.picker) {
    help.hidden = false;
    e.preventDefault();
    return;
  }
  const used = inScan ? scan.key(e) : !$("queue-view").hidden && queue.key(e);
  if (used) e.preventDefault();
});

api.setUnauthorizedHandler(() => {
  if (state.user) showLogin("Your session has ended: please log in again.");
});

(async function boot() {
  try {
    await loggedIn(await api.auth.me());
  } catch (err) {
    showLogin(
      err.status === 401 || err.status === 404 ? "" : `The service does not answer: ${err.message}`,
    );
  }
})();
