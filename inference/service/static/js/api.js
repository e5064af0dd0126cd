// The JSON API of the service, as the page uses it. The browser is authenticated by the
// session cookie set at login (HttpOnly: this code never sees the token); requests that
// change something also send the CSRF cookie's value in X-CSRF-Token.

export const API = "/api/v1";

/** An answer other than 2xx: `status` and the service's `detail` message. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return decodeURIComponent(v.join("="));
  }
  return null;
}

let onUnauthorized = () => {};

/** Called on any 401 (session expired or logged out elsewhere). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function detailOf(body, status) {
  if (!body) return `HTTP ${status}`;
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || String(d)).join("; ");
  return `HTTP ${status}`;
}

/** fetch + JSON + errors; `body` is sent as JSON. Returns the parsed answer (or null). */
export async function request(path, { method = "GET", body, query, signal, quiet401 } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") {
    const csrf = cookie("cargoscan_csrf");
    if (csrf) headers["X-CSRF-Token"] = csrf;
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
    }
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  let data = null;
  const type = res.headers.get("content-type") || "";
  if (type.includes("application/json")) {
    data = await res.json().catch(() => null);
  }
  if (!res.ok) {
    if (res.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(res.status, detailOf(data, res.status));
  }
  return data;
}

export const auth = {
  login: (username, password) =>
    request(`${API}/auth/login`, { method: "POST", body: { username, password }, quiet401: true }),
  logout: () => request(`${API}/auth/logout`, { method: "POST", quiet401: true }),
  me: () => request(`${API}/auth/me`, { quiet401: true }),
};

export const queue = (params, signal) => request(`${API}/queue`, { query: params, signal });

export const scans = {
  get: (id) => request(`${API}/scans/${encodeURIComponent(id)}`),
  tiles: (id) => request(`${API}/scans/${encodeURIComponent(id)}/tiles`),
  reviews: (id) => request(`${API}/scans/${encodeURIComponent(id)}/reviews`),
  related: (id) => request(`${API}/scans/${encodeURIComponent(id)}/related`),
  review: (id, body) =>
    request(`${API}/scans/${encodeURIComponent(id)}/reviews`, { method: "POST", body }),
  reopen: (id, reason) =>
    request(`${API}/scans/${encodeURIComponent(id)}/reopen`, { method: "POST", body: { reason } }),
  anomalyMapUrl: (id) => `${API}/scans/${encodeURIComponent(id)}/anomaly-map`,
  thumbnailUrl: (id) => `${API}/scans/${encodeURIComponent(id)}/thumbnail.png`,
  dziUrl(id, view, window) {
    let url = `${API}/scans/${encodeURIComponent(id)}/tiles/${view}.dzi`;
    if (view === "window" && window) {
      url += `?level=${window.level.toFixed(3)}&width=${window.width.toFixed(3)}`;
    }
    return url;
  },
};

export const viewerConfig = () => request(`${API}/viewer/config`);

/** Release CLEAR scans in bulk; `sampleEvery` N keeps every Nth for review. */
export const releaseClear = (scanIds, sampleEvery) =>
  request(`${API}/queue/release-clear`, {
    method: "POST",
    body: { scan_ids: scanIds, sample_every: sampleEvery || null },
  });
