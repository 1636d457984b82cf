// svc-client/react for real: example/react/app.jsx bundled with esbuild (React and ReactDOM from npm,
// development build, StrictMode), served on the API's origin, run in Debian's headless Chromium
// against real processes. useSubmit + useTask show count_to's progress and time left up to 100% and
// SUCCESS, and stream_text's text growing until it equals the result (also in a second view of the
// same task by id and token, and after the view was unmounted and mounted again mid-stream).

import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { JS_ROOT, REPO_ROOT, Stack } from "./harness.js";
import { servePage } from "./page-server.js";

const CHROMIUM = process.env.SVC_TEST_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "tests", "artifacts");
const EXAMPLE = join(JS_ROOT, "example", "react");
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;

const sleep = (/** @type {number} */ ms) => new Promise((done) => setTimeout(done, ms));

/** @type {Stack} */ let stack;
/** @type {import("playwright-core").Browser} */ let browser;
/** @type {{url: string, close: () => Promise<void>}} */ let site;
/** @type {import("playwright-core").Page} */ let page;
/** @type {string[]} */ const problems = [];

/** The example app as one ES module: its JSX, svc-client, svc-client/react, React and ReactDOM. */
async function bundle() {
  const esbuild = await import("esbuild");
  const built = await esbuild.build({
    entryPoints: [join(EXAMPLE, "app.jsx")],
    absWorkingDir: JS_ROOT,
    bundle: true,
    format: "esm",
    jsx: "automatic",
    // React's development build: StrictMode double-invokes effects only there.
    define: { "process.env.NODE_ENV": '"development"' },
    sourcemap: "inline",
    write: false,
    outfile: "app.js",
    logLevel: "silent",
  });
  return built.outputFiles[0].contents;
}

before(async () => {
  if (skip) return;
  const { chromium } = await import("playwright-core");
  const [app] = await Promise.all([
    bundle(),
    (async () => {
      stack = await new Stack().start();
    })(),
    (async () => {
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
        ],
      });
    })(),
  ]);
  const files = new Map([
    ["/index.html", readFileSync(join(EXAMPLE, "index.html"))],
    ["/app.js", app],
  ]);
  site = await servePage({ files: /** @type {Map<string, Uint8Array>} */ (files), apiPort: stack.apiPort });
  page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  await page.goto(site.url);
}, { timeout: 120_000 });

after(async () => {
  await page?.close();
  await browser?.close();
  await site?.close();
  await stack?.stop();
}, { timeout: 60_000 });

test("useSubmit + useTask: count_to's bar shows its time left, then 100% and SUCCESS", { skip, timeout: 60_000 }, async () => {
  const card = page.getByTestId("count-card");
  await page.fill("#count-n", "20");
  await page.click("#count-submit");
  await card.getByTestId("state").waitFor({ timeout: 10_000 });

  /** @type {Set<string>} */ const etas = new Set();
  /** @type {Set<number>} */ const percents = new Set();
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (await card.getAttribute("data-state")) !== "SUCCESS") {
    const eta = (await card.getByTestId("eta").textContent()) ?? "";
    if (eta) etas.add(eta);
    percents.add(Number(await card.getByTestId("progress").getAttribute("data-percent")));
    await sleep(50);
  }
  await card.getByTestId("result").waitFor({ timeout: 10_000 });
  assert.equal(await card.getByTestId("result").textContent(), "20");
  assert.equal(await card.getByTestId("state").textContent(), "SUCCESS");
  assert.equal(await card.getByTestId("progress").getAttribute("data-percent"), "100");
  assert.equal(await card.getByTestId("eta").textContent(), "", "no time left once it ended");
  assert.ok([...percents].some((p) => p > 0 && p < 100), `the bar moved through ${[...percents]}`);
  assert.ok(etas.size >= 2, `the eta was shown and updated: ${[...etas]}`);
  for (const eta of etas) {
    const seconds = Number(/^~(\d+) s left$/.exec(eta)?.[1]);
    assert.ok(seconds >= 0 && seconds <= 5, `a plausible eta for 20 × 0.15 s: ${eta}`);
  }
  assert.deepEqual(problems, []);
});

test("useTask: stream_text's text grows, survives an unmount mid-stream, and equals the result (also watched by id)", { skip, timeout: 60_000 }, async () => {
  const card = page.getByTestId("stream-card");
  await page.click("#stream-submit");
  const box = card.getByTestId("stream-text");
  await box.waitFor({ timeout: 10_000 });

  /** @type {Set<number>} */ const lengths = new Set();
  const deadline = Date.now() + 20_000;
  while (lengths.size < 3 && Date.now() < deadline) {
    const length = (await box.textContent())?.length ?? 0;
    if (length > 0) lengths.add(length);
    await sleep(30);
  }
  assert.ok(lengths.size >= 3, `the text grew through ${[...lengths]}`);
  await page.click("#stream-toggle"); // unmount the view mid-stream…
  assert.equal(await box.count(), 0);
  await sleep(300);
  await page.click("#stream-toggle"); // …and mount it again: the text is rebuilt from the handle
  await box.waitFor({ timeout: 5_000 });
  assert.equal(await card.getByTestId("state").textContent(), "STARTED", "still streaming after the remount");

  const result = card.getByTestId("result");
  await result.waitFor({ timeout: 30_000 });
  const taskId = await card.getAttribute("data-task-id");
  const final = await (await fetch(`${stack.baseUrl}/tasks/${taskId}`)).json();
  assert.equal(final.state, "SUCCESS");
  const text = await result.textContent();
  assert.equal(text, final.result);
  assert.equal(text?.split(" ").filter(Boolean).length, 40, `40 words: ${text}`);
  assert.equal(await box.textContent(), text, "the streamed text is the result: no gap, no duplicate");
  assert.equal(await box.getAttribute("data-chunks"), "40");
  const byId = card.getByTestId("stream-text-by-id");
  await page.waitForFunction(
    (expected) => document.querySelector('[data-testid="stream-text-by-id"]')?.textContent === expected,
    text,
    { timeout: 10_000 },
  );
  assert.equal(await byId.getAttribute("data-chunks"), "40", "each chunk once in the view by id");
  assert.equal(await card.getByTestId("state").textContent(), "SUCCESS");

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "react-usetask.png"), fullPage: true });
  assert.deepEqual(problems, []);
});
