"""Drives Swagger UI in headless Chromium: authorize with a bearer token, run
GET /v1/customers, and read the response shown in the page. Usage:
    swagger_ui.py DOCS_URL TOKEN SCREENSHOT_PATH
"""
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

url, token, screenshot = sys.argv[1:4]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={tempfile.mkdtemp()}"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
op = "#operations-customers-list_customers"
try:
    driver.set_window_size(1400, 2400)
    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".scheme-container button.authorize"))).click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".auth-container input"))).send_keys(token)
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    driver.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} .opblock-summary-control"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} button.try-out__btn"))).click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"{op} button.execute"))).click()
    body = f"{op} .live-responses-table .response-col_description pre"
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, body), "CUST001"))
    status = driver.find_element(By.CSS_SELECTOR, f"{op} .live-responses-table tbody .response-col_status").text.strip()
    text = driver.find_element(By.CSS_SELECTOR, body).text
    driver.save_screenshot(screenshot)
    assert status == "200", f"status {status!r}"
    for code in ("CUST001", "CUST002", "CUST003"):
        assert code in text, f"{code} not in the response shown: {text[:500]}"
    print(f"Swagger UI: GET /v1/customers answered {status} with the lab customers; screenshot {screenshot}")
finally:
    driver.quit()
