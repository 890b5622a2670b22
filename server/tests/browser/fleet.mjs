// Drives the fleet page in headless Chromium at a phone's width, as venue staff would:
// log in, filter the devices not synced for a week, revoke one with its confirmation.
//
//   node fleet.mjs <base url> <login> <password> <screenshot dir>
//
// Environment: KEPU_EXPECT_ALL (the device ids the page lists, comma-separated),
// KEPU_EXPECT_STALE (those not synced for 7 days; the first is revoked), KEPU_CHROMIUM
// (the browser, default /usr/bin/chromium; never downloaded).
//
// Output, one line each: CHECK <name> ok, SCREENSHOT <file> <w>x<h>, then DONE (exit 0)
// or FAIL <reason> (exit 1).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [base, login, password, shots] = process.argv.slice(2);
const all = (process.env.KEPU_EXPECT_ALL || '').split(',').filter(Boolean).sort();
const stale = (process.env.KEPU_EXPECT_STALE || '').split(',').filter(Boolean).sort();
if (!base || !login || !password || !shots || all.length === 0 || stale.length === 0) {
  console.log('FAIL usage: node fleet.mjs <base url> <login> <password> <screenshot dir> (and KEPU_EXPECT_ALL, KEPU_EXPECT_STALE)');
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
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let exitCode = 0;
try {
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 1,
    isMobile: true,
    hasTouch: true,
    locale: 'zh-CN',
    timezoneId: 'Asia/Shanghai',
  });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  const foreign = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base)) foreign.push(r.url());
  });
  const listed = async () =>
    (await page.$$eval('tr[data-device]', (rows) => rows.map((r) => r.dataset.device))).sort();
  const fits = async (name) => {
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    check(name, width <= 390, `page is ${width}px wide`);
  };

  await page.goto(`${base}/fleet`);
  check('redirected to login', new URL(page.url()).pathname === '/login', page.url());
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', password);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/fleet', { timeout: 15000 }),
    page.click('form [type="submit"]'),
  ]);
  problems.length = 0;
  check('in Chinese', (await page.getAttribute('html', 'lang')) === 'zh-CN');
  check('every device of the venue', JSON.stringify(await listed()) === JSON.stringify(all),
    (await listed()).join(','));
  await fits('fits a phone');

  // The filter: not synced for 7 days.
  await page.fill('input[name="stale"]', '7');
  await Promise.all([
    page.waitForURL((u) => u.searchParams.get('stale') === '7', { timeout: 15000 }),
    page.click('#filters button[type="submit"]'),
  ]);
  check('filtered to the silent devices', JSON.stringify(await listed()) === JSON.stringify(stale),
    (await listed()).join(','));
  const phoneList = join(shots, 'phone-zh.png');
  await page.screenshot({ path: phoneList, fullPage: false });
  say(`SCREENSHOT ${phoneList} 390x844`);

  // Revoke the first: the link asks first; only the confirmation revokes.
  const target = stale[0];
  await Promise.all([
    page.waitForURL((u) => u.pathname === `/fleet/devices/${target}/revoke`, { timeout: 15000 }),
    page.click(`tr[data-device="${target}"] a.danger`),
  ]);
  check('asked to confirm', (await page.textContent('h2')).includes('吊销这台设备'));
  await fits('the confirmation fits a phone');
  const confirm = join(shots, 'phone-confirm-zh.png');
  await page.screenshot({ path: confirm });
  say(`SCREENSHOT ${confirm} 390x844`);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/fleet' && u.searchParams.get('done') === 'revoked', { timeout: 15000 }),
    page.click('#confirm'),
  ]);
  check('told it is done', (await page.textContent('.note')).includes('已吊销'));
  const state = await page.getAttribute(`tr[data-device="${target}"]`, 'data-revoked');
  check('shown as revoked', state === 'true', state);
  check('no revoke button left', (await page.$$(`tr[data-device="${target}"] a.danger`)).length === 0);

  // English, at a desktop width too.
  await Promise.all([
    page.waitForURL((u) => u.searchParams.get('lang') === 'en', { timeout: 15000 }),
    page.click('a.lang'),
  ]);
  check('switched to English', (await page.textContent('h1')) === 'Fleet');
  await fits('English fits a phone');
  const phoneEn = join(shots, 'phone-en.png');
  await page.screenshot({ path: phoneEn });
  say(`SCREENSHOT ${phoneEn} 390x844`);
  await page.setViewportSize({ width: 1280, height: 800 });
  const desktop = join(shots, 'desktop-en.png');
  await page.screenshot({ path: desktop });
  say(`SCREENSHOT ${desktop} 1280x800`);

  check('no errors, no policy violations', problems.length === 0, problems.join(' | '));
  check('nothing loaded from elsewhere', foreign.length === 0, foreign.join(' '));
  say('DONE');
} catch (e) {
  say(`FAIL ${e.message.split('\n')[0]}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
