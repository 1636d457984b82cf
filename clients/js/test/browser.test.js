// The demo page (GET /demo, importing the SDK from /sdk) in Debian's headless Chromium against real
// processes: a count_to runs to 100% and SUCCESS, a fail shows its error; a screenshot is saved.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { REPO_ROOT, Stack } from "./harness.js";

const CHROMIUM = process.env.SVC_TEST_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "tests", "artifacts");
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

/** @type {Stack} */ let stack;
/** @type {import("playwright-core").Browser} */ let browser;

before(async () => {
  if (skip) return;
  const { chromium } = await import("playwright-core");
  [stack, browser] = await Promise.all([
    new Stack().start(),
    chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
    }),
  ]);
}, { timeout: 120_000 });

after(async () => {
  await browser?.close();
  await stack?.stop();
}, { timeout: 60_000 });

test("the demo page runs count_to to 100% and SUCCESS, and shows a failure's error", { skip, timeout: 90_000 }, async () => {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  /** @type {string[]} */ const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  await page.goto(`${stack.baseUrl}/demo`);

  await page.fill("#count-n", "10");
  await page.fill("#count-delay", "0.1");
  await page.click("#count-submit");
  const counting = page.locator('.task[data-task-name="count_to"]').first();
  await counting.waitFor({ timeout: 10_000 });
  const taskId = await counting.getAttribute("data-task-id");
  assert.match(taskId ?? "", /^[0-9a-f-]{36}$/);
  await counting.locator('[data-testid="progress"][data-percent="100"]').waitFor({ timeout: 30_000 });
  await counting.locator('[data-testid="result"]').waitFor({ timeout: 30_000 });
  assert.equal(await counting.locator('[data-testid="result"]').textContent(), "10");
  assert.equal(await counting.locator('[data-testid="state"]').textContent(), "SUCCESS");
  const timeline = await counting.locator('[data-testid="timeline"] li').evaluateAll(
    (items) => items.map((item) => /** @type {HTMLElement} */ (item).dataset.state),
  );
  assert.deepEqual([timeline[0], timeline.at(-1)], ["PENDING", "SUCCESS"]);
  assert.ok(timeline.includes("PROGRESS"), `timeline ${timeline}`);

  await page.fill("#fail-message", "boom from the browser");
  await page.click("#fail-submit");
  const failing = page.locator('.task[data-task-name="fail"]').first();
  await failing.locator('[data-testid="error"]').waitFor({ timeout: 30_000 });
  assert.equal(await failing.locator('[data-testid="error"]').textContent(), "ValueError: boom from the browser");
  assert.equal(await failing.locator('[data-testid="state"]').textContent(), "FAILURE");

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "demo.png"), fullPage: true });
  assert.deepEqual(problems, []);
});

test("with auth on, the demo page asks for the key, keeps it, and watches with task tokens", { skip, timeout: 90_000 }, async () => {
  const api = await stack.startApi({
    name: "api-auth-browser",
    env: { SVC_API_KEYS: "demo-key", SVC_SECRET_KEY: "demo-secret" },
  });
  const page = await browser.newPage();
  try {
    await page.goto(`${api.baseUrl}/demo`);
    await page.fill("#count-n", "3");
    await page.fill("#count-delay", "0.05");
    await page.click("#count-submit");
    const banner = page.locator('[data-testid="submit-error"]');
    await banner.locator("text=401").waitFor({ timeout: 10_000 });

    await page.fill("#api-key", "demo-key");
    await page.dispatchEvent("#api-key", "change");
    await page.click("#count-submit");
    const card = page.locator('.task[data-task-name="count_to"]').first();
    await card.locator('[data-testid="result"]').waitFor({ timeout: 30_000 });
    assert.equal(await card.locator('[data-testid="result"]').textContent(), "3");
    assert.equal(await banner.isVisible(), false);

    await page.reload();
    assert.equal(await page.inputValue("#api-key"), "demo-key", "the key is kept in localStorage");
  } finally {
    await page.close();
    await api.stop();
  }
});
