// Drives the upload page in Debian's headless Chromium: chooses the files
// given on the command line, waits until every one shows a verdict, and
// prints what the page shows as JSON. Usage: node upload_page.mjs URL FILE...
import { chromium } from "playwright-core";

const [url, ...files] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 0;
try {
  // HTTPS with the integration test's own CA, which Chromium does not know.
  const page = await browser.newPage({ ignoreHTTPSErrors: url.startsWith("https:") });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  const title = await page.title();
  const label = await page.locator("label.drop").innerText();
  // Keyboard: Tab reaches the picker, a native <input type=file multiple>
  // (Enter/Space open it natively; headless Chromium does not open its
  // file chooser reliably from a key press, so the files are set directly).
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  const multiple = await page.evaluate(() => {
    const p = document.getElementById("picker");
    return p.type === "file" && p.multiple;
  });
  await page.setInputFiles("#picker", files);
  await page.waitForFunction(
    (n) => document.querySelectorAll("li.file[data-verdict]").length === n,
    files.length, { timeout: 60000 });
  const items = await page.$$eval("li.file", (lis) => lis.map((li) => ({
    name: li.querySelector(".name").textContent,
    verdict: li.getAttribute("data-verdict"),
    state: li.querySelector(".state").textContent,
  })));
  const summary = await page.locator("#summary").innerText();
  const progressLabels = await page.$$eval("progress", (ps) =>
    ps.map((p) => p.getAttribute("aria-label")));
  console.log(JSON.stringify({ title, label, focused, multiple, items, summary, progressLabels,
                               errors }));
} catch (e) {
  console.error("browser test failed: " + e);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
