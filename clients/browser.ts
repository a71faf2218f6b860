// /docs and /redoc in a real browser (Debian's chromium, headless, driven by
// playwright-core) with every request to anything but the local server blocked: the
// pages must render from the API's own files. On /docs, "Try it out" runs every operation
// that needs no path parameter with the body Swagger UI pre-fills from the document's
// examples, and each must answer its documented success status. The list comes from the
// live document, so operations added later are tried too. The order is the examples'
// story: sign up, log in, authorise with the sign-up's token, every other operation,
// then log out, authorise with the login's token, change the password and delete the
// account. Two kinds of field cannot be pre-filled: a refresh token (filled in with the
// login's) and a token sent by email (the operation must answer a documented 4xx).
// Usage: SCREENSHOT_DIR=/tmp/x node build/browser.js BASE_URL (screenshots stay out of
// the repository).
import { chromium, type Locator, type Page, type Route } from "playwright-core";

const baseUrl = process.argv[2];
const screenshots = process.env.SCREENSHOT_DIR;
if (!baseUrl || !screenshots) {
  throw new Error("usage: SCREENSHOT_DIR=DIR node build/browser.js BASE_URL");
}
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const METHODS = ["get", "put", "post", "delete", "patch"];
const FIRST = ["signup", "login"];
const LAST = ["logout", "changePassword", "deleteAccount"];
const blocked: string[] = [];
const failures: string[] = [];

interface Operation {
  id: string;
  tag: string;
  method: string;
  path: string;
  success: number;
  documented: number[];
  example: Record<string, unknown> | undefined;
}

type Json = Record<string, any>;

async function liveOperations(): Promise<Operation[]> {
  const document = (await (await fetch(`${baseUrl}/openapi.json`)).json()) as Json;
  const schemas = (document.components?.schemas ?? {}) as Json;
  const found: Operation[] = [];
  for (const [path, item] of Object.entries(document.paths as Json)) {
    for (const method of METHODS) {
      const operation = (item as Json)[method] as Json | undefined;
      if (!operation) continue;
      const parameters = (operation.parameters ?? []) as Json[];
      if (parameters.some((parameter) => parameter.in === "path")) continue;
      const documented = Object.keys(operation.responses).map(Number).filter(Number.isFinite);
      const success = Math.min(...documented.filter((code) => code >= 200 && code < 300));
      const ref = operation.requestBody?.content?.["application/json"]?.schema?.$ref as string | undefined;
      const example = ref ? schemas[ref.split("/").pop()!]?.examples?.[0] : undefined;
      found.push({ id: operation.operationId, tag: operation.tags[0], method, path, success, documented, example });
    }
  }
  const rank = (operation: Operation): number =>
    FIRST.includes(operation.id) ? FIRST.indexOf(operation.id) - 10 : LAST.includes(operation.id) ? 10 + LAST.indexOf(operation.id) : 0;
  return found.sort((a, b) => rank(a) - rank(b));
}

async function authorise(page: Page, token: string): Promise<void> {
  await page.locator("button.authorize").first().click();
  const dialog = page.locator(".dialog-ux");
  const logout = dialog.locator("button", { hasText: "Logout" });
  if (await logout.count()) await logout.first().click();
  await dialog.locator("input").first().fill(token);
  await dialog.locator("button.authorize").click();
  await dialog.locator("button.btn-done").click();
}

async function execute(page: Page, block: Locator, operation: Operation, body?: string): Promise<{ status: number; json: Json }> {
  await block.locator(".opblock-summary").first().click();
  await block.locator("button.try-out__btn").click();
  if (body !== undefined) await block.locator("textarea.body-param__text").fill(body);
  const answered = page.waitForResponse(
    (response) =>
      response.request().method() === operation.method.toUpperCase() &&
      new URL(response.url()).pathname.endsWith(operation.path),
  );
  await block.locator("button.execute").click();
  const response = await answered;
  const text = await response.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // 204: no body
  }
  // The status Swagger UI shows is the one the API sent.
  const shown = block.locator(".live-responses-table tr.response .response-col_status").first();
  await shown.waitFor();
  if ((await shown.innerText()).trim() !== String(response.status())) {
    failures.push(`${operation.id}: the page shows ${await shown.innerText()}, the API sent ${response.status()}`);
  }
  await block.locator(".opblock-summary").first().click(); // fold it away again
  return { status: response.status(), json };
}

async function swaggerUi(page: Page): Promise<void> {
  const operations = await liveOperations();
  await page.goto(`${baseUrl}/docs`);
  await page.locator(".opblock").first().waitFor();
  const rendered = await page.locator(".opblock").count();
  console.log(`browser /docs: ${rendered} operations rendered, ${operations.length} without a path parameter`);
  if (rendered < 13) throw new Error(`/docs: only ${rendered} operations`);

  const tokens: Json = {};
  for (const operation of operations) {
    // Logout ended the sign-up's session: the rest runs on the login's.
    if (operation.id === "changePassword" && tokens.login) await authorise(page, tokens.login.access_token as string);
    const block = page.locator(`#operations-${operation.tag}-${operation.id}`);
    const fields = operation.example ?? {};
    let body: string | undefined;
    if (typeof fields.refresh_token === "string") {
      body = JSON.stringify({ ...fields, refresh_token: tokens.login?.refresh_token });
    }
    const emailed = Object.keys(fields).some((name) => name === "token");
    const { status, json } = await execute(page, block, operation, body);
    const expected = emailed
      ? operation.documented.includes(status) && status >= 400 && status < 500
      : status === operation.success;
    const wanted = emailed ? "a documented 4xx (its token comes by email)" : operation.success;
    console.log(`browser /docs: ${operation.method.toUpperCase()} ${operation.path} answered ${status}`);
    if (!expected) failures.push(`${operation.method.toUpperCase()} ${operation.path}: ${status}, expected ${wanted}: ${JSON.stringify(json)}`);
    if (operation.id === "signup" && status === 201) await authorise(page, json.access_token as string);
    if (operation.id === "login" && status === 200) tokens.login = json;
    if (typeof fields.refresh_token === "string" && status === 200 && json.access_token) tokens.login = json;
  }
  await page.screenshot({ path: `${screenshots}/docs.png`, fullPage: false });
}

async function redoc(page: Page): Promise<void> {
  await page.goto(`${baseUrl}/redoc`);
  await page.getByRole("heading", { name: "List the caller's tasks" }).first().waitFor();
  const operations = await page.locator("[data-section-id^='tag/'][data-section-id*='/operation/']").count();
  console.log(`browser /redoc: ${operations} operations rendered`);
  if (operations < 13) throw new Error(`/redoc: only ${operations} operations`);
  await page.screenshot({ path: `${screenshots}/redoc.png`, fullPage: false });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext();
  await context.route("**/*", (route: Route) => {
    const url = new URL(route.request().url());
    if (LOCAL_HOSTS.has(url.hostname)) return route.continue();
    blocked.push(url.href);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  await swaggerUi(page);
  await redoc(page);
} finally {
  await browser.close();
}
console.log(`browser: ${blocked.length} non-local requests blocked${blocked.length ? `: ${blocked.join(", ")}` : ""}`);
if (failures.length) throw new Error(failures.join("\n"));
console.log("browser: every operation without a path parameter answered as documented; /docs and /redoc work offline");
