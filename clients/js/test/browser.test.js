// The demo page (GET /demo, importing the SDK from /sdk) in Debian's headless Chromium against real
// processes: a count_to shows its time left and runs to 100% and SUCCESS, a fail shows its error, a stream_text grows word by
// word and survives a reload; the dashboard's detail shows a task's stream; screenshots are saved.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { REPO_ROOT, Stack } from "./harness.js";

const CHROMIUM = process.env.SVC_TEST_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "tests", "artifacts");
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

const sleep = (/** @type {number} */ ms) => new Promise((done) => setTimeout(done, ms));

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
  const eta = counting.locator('[data-testid="eta"]');
  await counting.locator('[data-testid="eta"]', { hasText: /^~\d+ s left$/ }).waitFor({ timeout: 10_000 });
  await counting.locator('[data-testid="progress"][data-percent="100"]').waitFor({ timeout: 30_000 });
  await counting.locator('[data-testid="result"]').waitFor({ timeout: 30_000 });
  assert.equal(await counting.locator('[data-testid="result"]').textContent(), "10");
  assert.equal(await counting.locator('[data-testid="state"]').textContent(), "SUCCESS");
  assert.equal(await eta.textContent(), "", "no time left once it ended");
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

test("the demo's Stream text card grows word by word, and after a reload mid-stream shows the whole text once", { skip, timeout: 90_000 }, async () => {
  const words = 40;
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  /** @type {string[]} */ const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  try {
    await page.goto(`${stack.baseUrl}/demo`);
    await page.fill("#stream-words", String(words));
    await page.fill("#stream-delay", "0.1");
    await page.click("#stream-submit");
    const card = page.locator('.task[data-task-name="stream_text"]').first();
    await card.waitFor({ timeout: 10_000 });
    const taskId = await card.getAttribute("data-task-id");
    assert.match(taskId ?? "", /^[0-9a-f-]{36}$/);

    // The text grows while the task runs: sample it until three different lengths were seen.
    const box = card.locator('[data-testid="stream-text"]');
    /** @type {Set<number>} */ const lengths = new Set();
    const deadline = Date.now() + 20_000;
    while (lengths.size < 3 && Date.now() < deadline) {
      const length = (await box.textContent())?.length ?? 0;
      if (length > 0) lengths.add(length);
      await sleep(40);
    }
    assert.ok(lengths.size >= 3, `the text grew through ${[...lengths]}`);
    const before = Number(await box.getAttribute("data-chunks"));
    assert.ok(before > 0 && before < words, `reloading mid-stream (${before} of ${words} chunks shown)`);
    assert.equal(await card.locator('[data-testid="state"]').textContent(), "STARTED");

    await page.reload();
    const again = page.locator(`.task[data-task-id="${taskId}"]`);
    await again.waitFor({ timeout: 10_000 });
    assert.equal(await again.getAttribute("data-task-name"), "stream_text");
    const result = again.locator('[data-testid="result"]');
    await result.waitFor({ timeout: 30_000 });
    const final = await (await fetch(`${stack.baseUrl}/tasks/${taskId}`)).json();
    assert.equal(final.state, "SUCCESS");
    assert.equal(await result.textContent(), final.result);
    const shown = again.locator('[data-testid="stream-text"]');
    assert.equal(await shown.textContent(), final.result, "the whole text, no gap, no duplicate");
    assert.equal(await shown.getAttribute("data-chunks"), String(words), "each chunk once");
    assert.equal(await again.locator('[data-testid="stream-gap"]').count(), 0);
    assert.equal(await again.locator('[data-testid="state"]').textContent(), "SUCCESS");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("svc-demo-running")), null, "an ended task is forgotten");

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "demo-stream.png"), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await page.close();
  }
});

test("the dashboard's task detail shows a stream_text's text growing live", { skip, timeout: 90_000 }, async () => {
  const words = 30;
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  /** @type {string[]} */ const problems = [];
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  try {
    await page.goto(`${stack.baseUrl}/dashboard`);
    await page.locator('[data-testid="connection"][data-status="live"]').waitFor({ timeout: 15_000 });
    const submitted = await fetch(`${stack.baseUrl}/tasks/stream_text`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kwargs: { words, delay: 0.1 } }),
    });
    const { task_id: taskId } = await submitted.json();
    await page.evaluate((id) => /** @type {any} */ (window).__svcDashboard.select(id), taskId);
    const box = page.locator('#detail [data-testid="detail-stream"][data-stream="output"]');
    await box.waitFor({ timeout: 20_000 });
    const partial = Number(await box.getAttribute("data-chunks"));
    await page.locator(`#detail[data-state="SUCCESS"]`).waitFor({ timeout: 30_000 });
    await page.waitForFunction(
      (n) => document.querySelector('#detail [data-testid="detail-stream"]')?.getAttribute("data-chunks") === String(n),
      words,
      { timeout: 10_000 },
    );
    const final = await (await fetch(`${stack.baseUrl}/tasks/${taskId}`)).json();
    assert.equal(await box.textContent(), final.result);
    assert.ok(partial < words, `the text was shown while it grew (${partial} of ${words} chunks at first sight)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "dashboard-stream.png") });
    assert.deepEqual(problems, []);
  } finally {
    await page.close();
  }
});
