"""`arlm serve`'s page in a real browser: headless Chromium, driven by Selenium, types a prompt,
presses Generate, and the text streams in; it is the text the API gives for those settings.
Nothing is downloaded: the browser and its driver are Debian's (`.ci/run` installs them)."""

import os
import shutil

import pytest

from tests.test_serve import Server, trained  # noqa: F401 (the fixture)

pytest.importorskip("httpx", reason="the serve tests talk HTTP with httpx")
pytest.importorskip("fastapi", reason="arlm serve needs fastapi and uvicorn")
selenium = pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium")
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
               None)  # fmt: skip
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (BROWSER and DRIVER),
        reason="no Chromium and chromedriver here: apt install chromium chromium-driver",
    ),
]


def test_the_page_streams_a_completion_in_a_real_browser(trained, tmp_path):  # noqa: F811
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(trained, "--max-tokens", 3000)
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    # Chromium leaves a folder for its profile's lock in TMPDIR: the test's own, not /tmp
    service = Service(DRIVER, env={**os.environ, "TMPDIR": str(tmp_path)})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.get(server.url + "/")
        assert trained.name in driver.title
        driver.find_element(By.ID, "prompt").send_keys("the ")
        for field, value in (("max_tokens", 1500), ("temperature", 0.7), ("seed", 5)):
            driver.execute_script(f"document.getElementById('{field}').value = '{value}'")
        driver.find_element(By.ID, "go").click()
        seen = []  # the output as it grows: more than one length before the end
        WebDriverWait(driver, 60, poll_frequency=0.01).until(
            lambda d: (
                seen.append(len(d.find_element(By.ID, "output").text))
                or d.find_element(By.ID, "status").text.startswith("done")
            )
        )
        assert driver.find_element(By.ID, "status").text == "done (length)"
        shown = driver.execute_script("return document.getElementById('output').textContent")
        expected = server.post(prompt="the ", max_tokens=1500, temperature=0.7, top_k=40, seed=5)
        assert shown == "the " + expected.json()["choices"][0]["text"]
        assert len(set(seen)) > 1
    finally:
        driver.quit()
        assert server.stop() == 0
