"""Screenshot of the serving web page in a real headless browser (the
picture in docs/serving.md, docs/images/serving_page.png).

    python docs/screenshot_serving_page.py http://127.0.0.1:8000/ \
        IMAGE TASK OUT.png

Uploads IMAGE for TASK on the page, as a user would, waits for the overlay
and the class legend, and saves the page. Needs playwright (``pip install
playwright``; no browser download: it drives Debian's ``/usr/bin/chromium``,
``apt-get install chromium``), which the project itself does not need.
"""
import argparse

# a closed network: no background connections, no sandbox as root
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-quic', '--no-first-run',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('url')
    parser.add_argument('image')
    parser.add_argument('task')
    parser.add_argument('out')
    parser.add_argument('--chromium', default='/usr/bin/chromium')
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=dict(width=1100, height=560))
        page.goto(args.url)
        page.wait_for_selector(f'#task option[value="{args.task}"]',
                               state='attached')
        page.select_option('#task', args.task)
        page.set_input_files('#image', args.image)
        page.click('#run')
        page.wait_for_selector('#legend tbody tr')
        page.wait_for_function(
            "document.getElementById('overlay').complete && "
            "document.getElementById('overlay').naturalWidth > 0")
        status = page.text_content('#status')
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f'{args.out}: {status}')


if __name__ == '__main__':
    main()
