"""The server's pages in a real browser (Playwright driving Debian's chromium, no download) and
over plain HTTP: the adapter table with filter, sort and pages, an adapter's page, the lineage
graph, the pool's totals; basic accessibility checks; one screenshot per page into docs/."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import serving

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ADAPTERPOOL_CHROMIUM", "/usr/bin/chromium")
DOCS = ROOT / "docs"


def _nudged(pool, source_id: str, folder: Path, delta: float, **meta_changes) -> Path:
    """A copy of a pool adapter with one tensor nudged (new weights) and its metadata changed."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(pool.adapter_dir(source_id), folder)
    state = load_file(folder / "adapter_model.safetensors")
    key = next(k for k in sorted(state) if "lora_B" in k)
    state[key] = state[key] + delta
    save_file(state, folder / "adapter_model.safetensors")
    meta = json.loads((folder / "adapterpool.json").read_text())
    task = meta["task"] | meta_changes.pop("task", {})
    meta.update(meta_changes, task=task)
    (folder / "adapterpool.json").write_text(json.dumps(meta))
    (folder / "task_embedding.safetensors").unlink(missing_ok=True)
    return folder


@pytest.fixture(scope="module")
def lineage_pool(tiny_pool, tmp_path_factory):
    """The tiny pool plus a family: a standard LoRA for "movie-reviews" (no parent, 40 s), two
    transfers to it from a source adapter (12 s and 9 s, so reuse saved 28 + 31 s) and a
    grandchild; the pool's records: 3 sources, 1 standard, 3 transfers."""
    from adapterpool.pool import AdapterPool

    root = tmp_path_factory.mktemp("pages")
    shutil.copytree(tiny_pool.path, root / "pool")
    pool = AdapterPool(root / "pool")
    source = next(r for r in pool.list() if r.task_name == "subjectivity")
    reviews = {"name": "movie-reviews"}
    standard = pool.add(_nudged(pool, source.id, root / "a", 1e-3, task=reviews,
                                train_seconds=40.0, energy_kwh=0.004, parent_id=None))
    child = pool.add(_nudged(pool, source.id, root / "b", 2e-3, task=reviews,
                             train_seconds=12.0, energy_kwh=0.001), parent_id=source.id)
    sibling = pool.add(_nudged(pool, source.id, root / "c", 3e-3, task=reviews,
                               train_seconds=9.0, energy_kwh=0.001), parent_id=source.id)
    grandchild = pool.add(_nudged(pool, child.id, root / "d", 4e-3,
                                  task={"name": "film-critique"}, train_seconds=7.0),
                          parent_id=child.id)
    return {"pool": pool, "source": source, "standard": standard, "child": child,
            "sibling": sibling, "grandchild": grandchild}


@pytest.fixture(scope="module")
def site(lineage_pool):
    pool = lineage_pool["pool"]
    with serving(pool.path) as (url, _):
        yield {"url": url, **lineage_pool}


# -- over HTTP -------------------------------------------------------------------------------


def _ids_in_table(html: str) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/adapters/([^"]+)">', html)


def test_index_filters_sorts_and_pages(site):
    pool = site["pool"]
    html = httpx.get(site["url"] + "/").text
    assert html.count("<h1") == 1 and "Adapter pool" in html
    assert sorted(_ids_in_table(html)) == sorted(r.id for r in pool.list())
    pair = httpx.get(site["url"] + "/", params={"kind": "pair"}).text
    assert [i for i in _ids_in_table(pair)] == [
        r.id for r in pool.list() if r.task_kind == "pair"]
    text = httpx.get(site["url"] + "/", params={"q": "movie-REVIEWS"}).text
    assert len(_ids_in_table(text)) == 4  # 3 of the task, and the grandchild by its parent
    by_size = _ids_in_table(httpx.get(site["url"] + "/", params={
        "sort": "id", "order": "asc"}).text)
    assert by_size == sorted(by_size)
    paged = httpx.get(site["url"] + "/", params={"per": 25, "page": 99}).text
    assert "Page 1 of 1" in paged  # clamped to the last page
    none = httpx.get(site["url"] + "/", params={"method": "IA3"}).text
    assert "No adapter matches" in none and not _ids_in_table(none)


def test_index_shows_reuse_saved(site):
    html = httpx.get(site["url"] + "/").text
    # two transfers to movie-reviews against its 40 s standard LoRA: 28 + 31 s
    assert re.search(r'id="reuse-seconds">59\.0 s<', html), html
    assert re.search(r'id="reuse-energy">0\.006000 kWh<', html)


def test_adapter_page_shows_the_exported_model_card(site, tmp_path):
    from html import unescape

    from adapterpool.pool.maintenance import export

    child = site["child"]
    html = httpx.get(f"{site['url']}/adapters/{child.id}").text
    card = (export(site["pool"], child.id, tmp_path / "out") / "README.md").read_text()
    shown = unescape(re.search(r'<pre id="model-card"><code>(.*?)</code></pre>', html,
                               re.S).group(1))
    assert shown.strip() == card.strip()
    assert child.sha256 in html and "PeftModel.from_pretrained" in html
    assert f'href="/adapters/{site["source"].id}"' in html  # ancestor
    assert f'href="/adapters/{site["grandchild"].id}"' in html  # descendant
    for name in ("adapter_model.safetensors", "adapter_config.json", "adapterpool.json"):
        link = f"/api/adapters/{child.id}/files/{name}"
        assert f'href="{link}"' in html
        assert httpx.get(site["url"] + link).status_code == 200
    missing = httpx.get(site["url"] + "/adapters/no-such-adapter")
    assert missing.status_code == 404 and "No adapter no-such-adapter" in missing.text


def test_lineage_page_draws_the_graph_with_graphviz(site):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (.ci/run installs it)")
    html = httpx.get(site["url"] + "/lineage").text
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    assert 'role="img"' in svg and "<title id=" in svg
    for key in ("source", "child", "sibling", "grandchild"):
        assert f'/adapters/{site[key].id}"' in svg
    assert site["standard"].id not in svg  # no parent, no child: not in the graph
    assert svg.count('class="edge"') == 3
    assert httpx.get(site["url"] + "/lineage.svg").headers["content-type"].startswith(
        "image/svg+xml")


# -- in a browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium under Playwright; skipped only where chromium is not installed,
    except under .ci/run (ADAPTERPOOL_REQUIRE_BROWSER=1), which installs it: there it fails."""
    if not Path(CHROMIUM).is_file():
        why = (f"no chromium at {CHROMIUM} (`apt-get install chromium`, as .ci/run does; "
               "ADAPTERPOOL_CHROMIUM names another executable)")
        if os.environ.get("ADAPTERPOOL_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    import playwright.sync_api as playwright_api  # a dev dependency: always there
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def _accessible(page) -> None:
    """One h1; every form control has a label; every table header a scope; every svg a title;
    every image alt text; the document a language."""
    assert page.locator("h1").count() == 1
    problems = page.evaluate("""() => {
        const out = [];
        for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
            if (!el.labels || el.labels.length === 0) out.push('unlabelled ' + el.outerHTML);
        }
        for (const th of document.querySelectorAll('th')) {
            if (!th.getAttribute('scope')) out.push('th without scope: ' + th.textContent);
        }
        for (const svg of document.querySelectorAll('svg')) {
            const t = svg.querySelector(':scope > title');
            if (!t || !t.textContent.trim()) out.push('svg without title');
        }
        for (const img of document.querySelectorAll('img')) {
            if (!img.hasAttribute('alt')) out.push('img without alt');
        }
        if (!document.documentElement.lang) out.push('no lang');
        return out;
    }""")
    assert problems == []


def _screenshot(page, name: str, tmp_path: Path) -> None:
    """A screenshot of the viewport, checked; copied into docs/ (the README's) when
    ADAPTERPOOL_UPDATE_SCREENSHOTS=1, so that a test run leaves the checkout unchanged."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    size = path.stat().st_size
    assert 5_000 < size < 400_000, f"{name}: {size} bytes"
    from PIL import Image

    with Image.open(path) as image:
        assert image.size == (1280, 800)
        assert len(set(image.convert("L").resize((64, 40)).tobytes())) > 8  # not blank
    if os.environ.get("ADAPTERPOOL_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / name)


def test_browse_filter_and_sort(site, page, tmp_path):
    page.goto(site["url"] + "/")
    _accessible(page)
    rows = page.locator("#adapters tbody tr")
    assert rows.count() == len(site["pool"].list())
    _screenshot(page, "page-adapters.png", tmp_path)
    page.get_by_label("Task kind").select_option("pair")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"kind=pair"))
    assert rows.count() == 1 and "word-sense" in rows.first.inner_text()
    page.get_by_role("link", name="Clear filters").click()
    page.get_by_label("Search (id, task, labels, parent)").fill("movie-reviews")
    page.keyboard.press("Enter")  # the form submits from the keyboard, no script
    page.wait_for_url(re.compile(r"q=movie-reviews"))
    assert rows.count() == 4
    page.locator('thead a[data-sort="id"]').click()
    page.wait_for_url(re.compile(r"sort=id"))
    ids = [t.strip() for t in page.locator("#adapters tbody th").all_inner_texts()]
    assert ids == sorted(ids) and len(ids) == 4
    assert page.locator('th[aria-sort="ascending"]').inner_text().startswith("Adapter")
    page.locator('thead a[data-sort="id"]').click()
    page.wait_for_url(re.compile(r"order=desc"))
    ids = [t.strip() for t in page.locator("#adapters tbody th").all_inner_texts()]
    assert ids == sorted(ids, reverse=True)


def test_keyboard_reaches_the_filters(site, page):
    page.goto(site["url"] + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"q", "kind", "method", "per"} <= set(focused)


def test_detail_and_lineage_pages(site, page, tmp_path):
    child = site["child"]
    page.goto(site["url"] + "/")
    page.get_by_role("link", name=child.id, exact=True).first.click()
    page.wait_for_url(re.compile(f"/adapters/{child.id}$"))
    _accessible(page)
    assert page.locator("h1").inner_text() == child.id
    assert child.sha256 in page.locator("#files").inner_text()
    assert "PeftModel.from_pretrained" in page.locator("#snippet").inner_text()
    assert page.locator("#ancestors li").all_inner_texts()[0].startswith(site["source"].id)
    assert site["grandchild"].id in page.locator("#descendants").inner_text()
    href = page.get_by_role("link", name="adapter_model.safetensors").get_attribute("href")
    assert httpx.get(site["url"] + href).headers["x-adapter-sha256"] == child.sha256
    _screenshot(page, "page-adapter.png", tmp_path)
    page.get_by_role("link", name="The whole pool's lineage").click()
    page.wait_for_url(re.compile("/lineage$"))
    _accessible(page)
    if shutil.which("dot") is not None:
        graph = page.locator("svg.lineage-graph")
        assert graph.is_visible()
        box = graph.bounding_box()
        assert box["width"] > 200 and box["height"] > 50
        assert graph.locator("g.node").count() == 4
    assert page.locator("#edges tbody tr").count() == 3
    _screenshot(page, "page-lineage.png", tmp_path)
    page.locator("#edges").get_by_role("link", name=site["grandchild"].id).click()
    page.wait_for_url(re.compile(f"/adapters/{site['grandchild'].id}$"))
    assert "film-critique" in page.locator("main").inner_text()


def test_sorting_puts_missing_scores_last_in_either_order(lineage_pool):
    from dataclasses import replace

    from adapterpool.server.pages import sorted_records

    records = lineage_pool["pool"].list()[:3]
    unscored = replace(records[0], id="zz-unscored", metrics={})
    scored = [replace(r, metrics={"validation": {"accuracy": a}})
              for r, a in zip(records, (0.2, 0.9, 0.5), strict=True)]
    for descending, expected in ((True, [0.9, 0.5, 0.2]), (False, [0.2, 0.5, 0.9])):
        ordered = sorted_records([unscored, *scored], "validation", descending)
        assert [r.metrics["validation"]["accuracy"] for r in ordered[:3]] == expected
        assert ordered[-1].id == "zz-unscored"
