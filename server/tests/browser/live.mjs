// Drives the live venue dashboard in headless Chromium, as venue staff would.
//
//   node live.mjs <base url> <login> <password> <venue id> <screenshot dir>
//
// Environment: KEPU_EXPECT_ARRIVED (the arrived count to wait for, required),
// KEPU_CHROMIUM (the browser, default /usr/bin/chromium; never downloaded).
//
// Protocol with the Rust test on stdout, one line each:
//   READY arrived=<n>        the dashboard is live; the test now makes devices sync
//   ARRIVED <n> <ms>         the page showed <n> arrived, <ms> after READY, without reload
//   CHECK <name> ok          a check passed
//   SCREENSHOT <file> <w>x<h>
//   CUT                      the test now cuts the network for a few seconds
//   DONE                     all passed (exit code 0)
//   FAIL <reason>            a check failed (exit code 1)
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, login, password, venue, shots] = process.argv.slice(2);
const expected = process.env.KEPU_EXPECT_ARRIVED;
if (!base || !login || !password || !venue || !shots || !expected) {
  console.log('FAIL usage: node live.mjs <base url> <login> <password> <venue> <screenshot dir> (and KEPU_EXPECT_ARRIVED)');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const say = (line) => console.log(line);
function check(name, ok, detail) {
  if (!ok) throw new Error(`${name}${detail ? ': ' + detail : ''}`);
  say(`CHECK ${name} ok`);
}

const browser = await chromium.launch({
  executablePath: process.env.KEPU_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // No background traffic: the test machine's network is closed to everything but us.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let exitCode = 0;
try {
  // A Chinese browser: the page must start in Chinese on its own.
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 1,
    locale: 'zh-CN',
    timezoneId: 'Asia/Shanghai',
  });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // The event stream is cut when the page closes; anything else is a problem.
    if (!r.url().includes('/live/events')) problems.push(`request failed: ${r.url()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  const foreign = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base)) foreign.push(r.url());
  });

  // Not logged in: the dashboard sends the browser to the login form.
  await page.goto(`${base}/venues/${venue}/live`);
  check('redirected to login', new URL(page.url()).pathname === '/login', page.url());
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', password);
  await Promise.all([
    page.waitForURL((u) => u.pathname === `/venues/${venue}/live`, { timeout: 15000 }),
    page.click('form [type="submit"]'),
  ]);
  check('back on the dashboard after login', true);
  // From here on only the dashboard's own requests and messages are judged.
  problems.length = 0;

  await page.waitForFunction(() => document.body.dataset.connection === 'live'
    && /^\d+$/.test(document.getElementById('total-arrived').textContent), null, { timeout: 15000 });
  check('page language follows the browser', await page.evaluate(() =>
    document.documentElement.lang === 'zh-CN'
    && document.querySelector('[data-i18n="bookings"]').textContent === '今日预约'));

  // Anything that reloads or loads another document from here on is a failure
  // (history.replaceState for ?lang= is a same-document change and fires no load).
  let navigations = 0;
  page.on('domcontentloaded', () => { navigations += 1; });
  await page.evaluate(() => { window.kepuMarker = 'same page'; });
  const before = await page.textContent('#total-arrived');
  const ready = Date.now();
  say(`READY arrived=${before}`);

  await page.waitForFunction((n) => document.getElementById('total-arrived').textContent === n,
    expected, { timeout: 20000 });
  const waited = Date.now() - ready;
  const marker = await page.evaluate(() => window.kepuMarker);
  check('no reload', marker === 'same page' && navigations === 0,
    `marker=${marker} navigations=${navigations}`);
  say(`ARRIVED ${expected} ${waited}`);

  // The booking card, its missing list and the chart follow the same snapshot.
  const bookingArrived = await page.textContent('.booking .num.arrived .num-value');
  check('booking shows the arrivals', bookingArrived === expected, bookingArrived);
  const bars = await page.locator('#chart rect.bar').count();
  check('arrivals chart drawn', bars > 0, `${bars} bars`);
  const ledgerRows = await page.locator('#ledger tbody tr').count();
  check('duplicate ledger filled', ledgerRows > 0, `${ledgerRows} rows`);
  const anomalyRows = await page.locator('#anomalies tbody tr').count();
  check('anomaly ledger filled', anomalyRows > 0, `${anomalyRows} rows`);
  // A device has been silent for 20 minutes: the counts are lower bounds.
  const band = await page.getAttribute('#band', 'data-state');
  const headline = await page.textContent('#band-headline');
  const bound = await page.textContent('#bound-arrived');
  check('uncertainty band shown', band === 'stale' && bound.startsWith('≥')
    && /(^|\D)20(\D|$)/.test(headline) && (await page.locator('#band-devices li').count()) === 1,
    `state=${band} headline=${headline} bound=${bound}`);
  const missing = process.env.KEPU_EXPECT_MISSING;
  if (missing) {
    const names = await page.locator('.booking .names li').allTextContents();
    check('missing pupil listed by name', names.includes(missing), names.join(', '));
  }

  // Language switch without reload, reflected in the address.
  await page.click('#lang');
  await page.waitForFunction(() => document.documentElement.lang === 'en');
  const heading = await page.textContent('[data-i18n="bookings"]');
  const marker2 = await page.evaluate(() => window.kepuMarker);
  check('switched to English', heading === "Today's bookings"
    && new URL(page.url()).searchParams.get('lang') === 'en'
    && navigations === 0 && marker2 === 'same page',
    `heading=${heading} url=${page.url()} navigations=${navigations} marker=${marker2}`);
  const desktop = join(shots, 'desktop-en.png');
  await page.screenshot({ path: desktop });
  say(`SCREENSHOT ${desktop} 1280x800`);

  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check('fits a phone', overflow <= 390, `page is ${overflow}px wide`);
  const phone = join(shots, 'phone-en.png');
  await page.screenshot({ path: phone });
  say(`SCREENSHOT ${phone} 390x844`);
  await page.click('#lang');
  await page.waitForFunction(() => document.documentElement.lang === 'zh-CN');
  const phoneZh = join(shots, 'phone-zh.png');
  await page.screenshot({ path: phoneZh });
  say(`SCREENSHOT ${phoneZh} 390x844`);

  // ?lang= wins over the browser's language.
  await page.goto(`${base}/venues/${venue}/live?lang=en`);
  await page.waitForFunction(() => document.body.dataset.connection === 'live');
  check('?lang=en overrides the browser', await page.evaluate(() => document.documentElement.lang === 'en'));

  check('no errors, no policy violations', problems.length === 0, problems.join(' | '));
  check('nothing loaded from elsewhere', foreign.length === 0, foreign.join(' '));

  // The test cuts the network between browser and server for a few seconds: the page
  // says so, and recovers by itself when the network is back.
  say('CUT');
  await page.waitForFunction(() => document.body.dataset.connection === 'lost', null, { timeout: 10000 });
  check('connection lost shown', (await page.textContent('#conn')).startsWith('Connection lost'));
  await page.waitForFunction(() => document.body.dataset.connection === 'live', null, { timeout: 30000 });
  check('reconnected by itself', true);
  say('DONE');
} catch (e) {
  say(`FAIL ${String(e && e.message ? e.message : e).split('\n')[0]}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
