// JSON calls to the builder API with the page's CSRF token: {status, data}.
export const BASE = "/api/v1/builder";

export function makeApi(csrf) {
  return async function api(method, url, body) {
    const opts = { method, headers: { "X-CSRF-Token": csrf, "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const response = await fetch(url, opts);
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  };
}
