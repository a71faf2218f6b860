// /docs and /redoc in a real browser (Debian's chromium, headless, driven by
// playwright-core) with every request to anything but the local server blocked: the
// pages must render from the API's own files, authorise with a real token and run
// "Try it out" on GET /api/tasks. Usage: SCREENSHOT_DIR=/tmp/x node build/browser.js BASE_URL
// (the screenshots stay out of the repository).
import { chromium, type Page, type Route } from "playwright-core";

const baseUrl = process.argv[2];
const screenshots = process.env.SCREENSHOT_DIR;
if (!baseUrl || !screenshots) {
  throw new Error("usage: SCREENSHOT_DIR=DIR node build/browser.js BASE_URL");
}
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const blocked: string[] = [];
const failures: string[] = [];

async function signupToken(): Promise<string> {
  const email = `browser-${Date.now()}@example.com`;
  const response = await fetch(`${baseUrl}/api/auth/signup`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, name: "Browser", password: "correct horse battery" }),
  });
  if (response.status !== 201) {
    throw new Error(`signup: ${response.status} ${await response.text()}`);
  }
  const body = (await response.json()) as { access_token: string };
  return body.access_token;
}

function watch(page: Page): void {
  page.on("pageerror", (error) => failures.push(`page error: ${error.message}`));
  page.on("response", (response) => {
    // The 401 of an operation tried without a token would be the API's answer, not the page's.
    if (response.status() >= 400) failures.push(`${response.status()} for ${response.url()}`);
  });
}

async function swaggerUi(page: Page, token: string): Promise<void> {
  await page.goto(`${baseUrl}/docs`);
  await page.locator(".opblock").first().waitFor();
  const operations = await page.locator(".opblock").count();
  console.log(`browser /docs: ${operations} operations rendered`);
  if (operations < 13) throw new Error(`/docs: only ${operations} operations`);

  await page.locator("button.authorize").first().click();
  const dialog = page.locator(".dialog-ux");
  await dialog.locator("input").first().fill(token);
  await dialog.locator("button.authorize").click();
  await dialog.locator("button.btn-done").click();

  const list = page.locator("#operations-tasks-listTasks");
  await list.locator(".opblock-summary").click();
  await list.locator("button.try-out__btn").click();
  await list.locator("button.execute").click();
  const status = list.locator(".live-responses-table tr.response .response-col_status").first();
  await status.waitFor();
  await status.scrollIntoViewIfNeeded();
  const code = (await status.innerText()).trim();
  console.log(`browser /docs: Try it out on GET /api/tasks answered ${code}`);
  if (!code.startsWith("200")) throw new Error(`Try it out: ${code}`);
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
  const token = await signupToken();
  const page = await context.newPage();
  watch(page);
  await swaggerUi(page, token);
  await redoc(page);
} finally {
  await browser.close();
}
console.log(`browser: ${blocked.length} non-local requests blocked${blocked.length ? `: ${blocked.join(", ")}` : ""}`);
if (failures.length) throw new Error(failures.join("\n"));
console.log("browser: /docs and /redoc work offline");
