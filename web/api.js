// The API client. The token lives in sessionStorage (this tab only, gone
// when it closes) and goes in an Authorization header on every call, never
// in a URL. A 401 forgets it and asks again.

const KEY = "cairn.token";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

let unauthorized = () => {};

/** Call `f` when the server refuses the token. */
export function whenUnauthorized(f) {
  unauthorized = f;
}

/** `path` under /api/v1 with `params` as its query string. */
export function url(path, params) {
  const q = params ? `?${new URLSearchParams(params)}` : "";
  return `/api/v1${path}${q}`;
}

async function call(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${token() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  if (resp.status === 401) {
    clearToken();
    unauthorized();
    throw new AuthError("the token was refused");
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const j = await resp.json();
      if (j && typeof j.error === "string") message = j.error;
    } catch {
      // Not JSON: the status says enough.
    }
    throw new ApiError(resp.status, message);
  }
  return raw ? resp : resp.json();
}

export const get = (path, params) => call(url(path, params));
export const post = (path, body = {}) => call(url(path), { method: "POST", body });

/** A name safe to save a download as: no directory, no control character. */
export function safeName(name) {
  const clean = String(name).replace(/[\/\\\u0000-\u001f\u007f]/g, "_").slice(0, 200);
  return clean === "" || clean === "." || clean === ".." ? "download" : clean;
}

/**
 * Download `what` (POST /downloads: `snapshot`, `path` or `path_hex`, and
 * `format` for a directory archive) under `name`. The server answers with
 * a one-time URL that needs no token, which a plain link can follow: the
 * browser then streams the download to disk itself, however large, instead
 * of this page holding it in memory first. Errors (a path that is not
 * there, a zip too large) come back here, before anything is saved.
 */
export async function download(what, name) {
  const ticket = await post("/downloads", what);
  const a = document.createElement("a");
  a.href = ticket.url;
  a.download = safeName(name);
  a.rel = "noreferrer";
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
}
