// Drives the upload page in Debian's headless Chromium while the test cuts
// its connections: chooses the files given on the command line, records
// every text each file's state line shows on the way (a MutationObserver, so
// a short "Reconnecting" is not missed), waits until every file shows a
// verdict, and prints it all as JSON. Usage: node resume_page.mjs URL FILE...
import { chromium } from "playwright-core";

const [url, ...files] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const errors = [], console_errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // A dropped WebSocket is reported on the console by Chromium itself.
  page.on("console", (m) => { if (m.type() === "error") console_errors.push(m.text()); });
  await page.goto(url);
  await page.evaluate(() => {
    window.__history = {};
    const list = document.getElementById("files");
    const look = () => {
      for (const li of list.querySelectorAll("li.file")) {
        const name = li.querySelector(".name").textContent;
        const h = window.__history[name] || (window.__history[name] = []);
        const text = li.querySelector(".state").textContent +
          (li.classList.contains("reconnecting") ? " [reconnecting]" : "");
        if (h[h.length - 1] !== text) h.push(text);
      }
    };
    new MutationObserver(look).observe(list, {
      subtree: true, childList: true, characterData: true, attributes: true });
  });
  await page.setInputFiles("#picker", files);
  await page.waitForFunction(
    (n) => document.querySelectorAll("li.file[data-verdict]").length === n,
    files.length, { timeout: 90000 });
  const items = await page.$$eval("li.file", (lis) => lis.map((li) => ({
    name: li.querySelector(".name").textContent,
    verdict: li.getAttribute("data-verdict"),
    state: li.querySelector(".state").textContent,
  })));
  const history = await page.evaluate(() => window.__history);
  const summary = await page.locator("#summary").innerText();
  // What the tab remembers once every file is done: nothing left to resume.
  const remembered = await page.evaluate(() => Object.keys(sessionStorage)
    .filter((k) => k.startsWith("intake:")));
  console.log(JSON.stringify({ items, history, summary, remembered, errors, console_errors }));
} catch (e) {
  console.error("browser test failed: " + e);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
