"""tools/serve.py end to end: a real server subprocess on 127.0.0.1 with
three ViT tasks on one random base, driven by a real HTTP client.

Proves that every endpoint answers what it documents, that predictions
equal ``init_segmentor`` + ``inference`` of each task file label for label,
that bad requests get a 4xx naming the problem while the server keeps
serving, that tasks can be added and removed at run time, and that
concurrent requests of different tasks are batched into shared forward
passes without losing or mixing up any answer.
"""
import asyncio
import hashlib
import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from mmseg_vpt.apis import inference, init_segmentor

from .serving_helpers import (base_file, random_images, task_config,
                              write_task_file, write_tasks)
from .tools_helpers import PYTHON, REPO, free_port

TASKS = ('ade', 'shallow7', 'fcn4')
NUM_CLASSES = {'ade': 150, 'shallow7': 7, 'fcn4': 4}
MAX_BYTES = 60_000  # a 70x90 random PNG is ~19 kB
MAX_PIXELS = 20_000  # a 70x90 image is 6300 pixels
STARTUP_S = 180


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def png(bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.png', bgr)
    assert ok
    return buf.tobytes()


def label_png(content: bytes) -> np.ndarray:
    """A palette PNG's pixel values (the class ids)."""
    img = Image.open(io.BytesIO(content))
    assert img.format == 'PNG' and img.mode == 'P', (img.format, img.mode)
    return np.asarray(img).astype(np.int64)


def labels_of(model, img: np.ndarray) -> np.ndarray:
    """The reference label map: ``inference`` of one task's segmentor."""
    return inference(model, img).pred_sem_seg.data[0].numpy().astype(
        np.int64)


def start_server(args, log: Path) -> tuple:
    """Start tools/serve.py with ``args`` on a free port; wait for /health
    (failing with the server's log). Returns (process, base url)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            [str(a) for a in [PYTHON, REPO / 'tools/serve.py', *args,
                              '--port', port, '--host', '127.0.0.1']],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    end = time.monotonic() + STARTUP_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f'server exited with {proc.returncode}:\n'
                                 f'{log.read_text()[-6000:]}')
        try:
            if httpx.get(f'{url}/health', timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise AssertionError(f'no /health within {STARTUP_S} s:\n'
                         f'{log.read_text()[-6000:]}')


def stop_server(proc: subprocess.Popen, log: Path,
                sig: int = signal.SIGINT) -> None:
    """Stop the server with ``sig`` (SIGINT: Ctrl+C, as its log says to;
    SIGTERM: as a service manager does) and check it shut down cleanly:
    uvicorn's shutdown ran the app's lifespan end (the batcher stopped), no
    traceback, and exit status 0 for SIGINT, or -SIGTERM for SIGTERM
    (uvicorn re-raises a caught SIGTERM after its graceful shutdown, so the
    process ends by the signal, as a supervisor expects)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f'server still running 30 s after signal '
                             f'{sig}:\n{log.read_text()[-4000:]}') from None
    text = log.read_text()
    expected = 0 if sig == signal.SIGINT else -sig
    assert rc == expected, f'server exited with {rc}:\n{text[-4000:]}'
    shutdown = text[text.rfind('Shutting down'):]
    for line in ('Application shutdown complete',
                 'Finished server process'):
        assert line in shutdown, text[-4000:]
    assert 'Traceback' not in shutdown, shutdown[-6000:]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The base and three task files, plus files for run-time tasks: a new
    seed of 'shallow7', a task tuned on another base, a VPT+Bias task and
    a file that is no checkpoint."""
    folder = tmp_path_factory.mktemp('serve')
    out = write_tasks('vit', folder)
    other = base_file('vit', folder / 'other_base.pth')
    out['other_base'] = other
    out['foreign'] = write_task_file(
        task_config('vit', other), folder / 'foreign.pth', seed=5)
    out['bias'] = write_task_file(
        task_config('vit', out['base'],
                    dict(frozen_exclude=['prompt', 'bias'])),
        folder / 'bias.pth', seed=6)
    cfg7 = out['shallow7'][0]
    out['new7'] = (cfg7, write_task_file(cfg7, folder / 'new7.pth',
                                         seed=11))
    garbage = folder / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all' * 10)
    out['garbage'] = garbage
    out['folder'] = folder
    return out


@pytest.fixture(scope='module')
def images():
    """Test images of two sizes (neither a multiple of any patch/window)."""
    return random_images(4, seed=1) + random_images(2, seed=2,
                                                    size=(61, 83))


@pytest.fixture(scope='module')
def models(files):
    """{task: init_segmentor(config, task file)}: the reference."""
    torch.set_num_threads(1)
    return {name: init_segmentor(files[name][0], str(files[name][1]))
            for name in TASKS + ('new7',)}


@pytest.fixture(scope='module')
def refs(models, images):
    """{task: [label map of each image]} from init_segmentor + inference."""
    out = {name: [labels_of(model, img) for img in images]
           for name, model in models.items()}
    for name, labels in out.items():  # the models are not constant
        assert len(np.unique(np.concatenate(
            [x.ravel() for x in labels]))) > 1, name
    return out


@pytest.fixture(scope='module')
def server(files):
    """One server of the three tasks, small size limits, batches of up to
    8 waiting up to 50 ms; stopped (cleanly) after the module."""
    log = files['folder'] / 'server.log'
    args = [files['ade'][1]]
    for name in TASKS:
        args += ['--task', f'{name}={files[name][1]}']
    args += ['--max-image-bytes', MAX_BYTES, '--max-image-pixels',
             MAX_PIXELS, '--max-wait-ms', 50, '--max-batch-size', 8,
             '--threads', 1]
    proc, url = start_server(args, log)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.server_log = log  # for failure messages
            yield client
    finally:
        stop_server(proc, log)


def log_tail(client, chars=3000) -> str:
    """The end of the server's log (a 500's traceback)."""
    log = getattr(client, 'server_log', None)
    return log.read_text()[-chars:] if log else ''


def predict(client, task, body, fmt=None, **kwargs):
    params = dict(task=task)
    if fmt:
        params['format'] = fmt
    return client.post('/predict', params=params, content=body, **kwargs)


def assert_serves(client, images, refs, task='ade', i=0) -> None:
    """A valid request still gets the right labels."""
    res = predict(client, task, png(images[i]))
    assert res.status_code == 200, res.text
    np.testing.assert_array_equal(label_png(res.content), refs[task][i])


def metrics(client) -> dict:
    res = client.get('/metrics')
    assert res.status_code == 200
    return res.json()


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------
def test_health_tasks_page_and_openapi(server, files):
    """/health lists the tasks; /tasks carries each file's class names,
    palette, class count, prompt geometry and test mode; / is the web page
    with the elements its script uses; /openapi.json lists every
    endpoint."""
    health = server.get('/health')
    assert health.status_code == 200
    assert health.json() == dict(status='ok', tasks=list(TASKS),
                                 device='cpu')

    res = server.get('/tasks')
    assert res.status_code == 200
    info = {t['name']: t for t in res.json()}
    assert list(info) == list(TASKS)
    expect = dict(ade=(10, 4, 'whole'), shallow7=(3, 1, 'whole'),
                  fcn4=(6, 2, 'slide'))
    for name in TASKS:
        meta = torch.load(files[name][1], map_location='cpu',
                          weights_only=False)['meta']['dataset_meta']
        t = info[name]
        assert t['num_classes'] == NUM_CLASSES[name]
        assert t['classes'] == meta['classes'] == [
            f'{name}-{i}' for i in range(NUM_CLASSES[name])]
        assert t['palette'] == meta['palette']
        assert t['ensemble_size'] == 1
        assert t['files'] == [str(files[name][1])]
        assert (t['prompt_length'], t['prompted_layers'],
                t['test_mode']) == expect[name]
    assert info['fcn4']['decode_head'] == 'FCNHead'

    page = server.get('/')
    assert page.status_code == 200
    assert page.headers['content-type'].startswith('text/html')
    for element in ('select id="task"', 'input id="image"',
                    'img id="overlay"', 'table id="legend"'):
        assert element in page.text, element
    for call in ("fetch('/tasks')", '/predict'):
        assert call in page.text, call

    spec = server.get('/openapi.json').json()
    methods = {path: sorted(ops) for path, ops in spec['paths'].items()}
    assert methods == {'/health': ['get'], '/metrics': ['get'],
                       '/tasks': ['get', 'post'],
                       '/tasks/{name}': ['delete'], '/predict': ['post']}


# --------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------
@pytest.mark.parametrize('task', TASKS)
def test_predictions_equal_the_reference(server, images, refs, task):
    """png: a palette PNG whose values are exactly the reference label map
    (whole and sliding-window tasks, two image sizes); json: per-class
    pixel counts summing to H*W that equal the reference's histogram, with
    the task's class names and colours; overlay: a colour PNG of the
    image's size; a multipart upload gives the raw body's labels."""
    names = [f'{task}-{i}' for i in range(NUM_CLASSES[task])]
    palette = {t['name']: t['palette'] for t in server.get('/tasks').json()
               }[task]
    for i in (0, 4):
        img, ref = images[i], refs[task][i]
        h, w = img.shape[:2]
        res = predict(server, task, png(img), 'png')
        assert res.status_code == 200, res.text
        assert res.headers['content-type'] == 'image/png'
        labels = label_png(res.content)
        assert labels.shape == (h, w)
        np.testing.assert_array_equal(labels, ref)

        res = predict(server, task, png(img), 'json')
        assert res.status_code == 200, res.text
        body = res.json()
        assert (body['task'], body['height'], body['width']) == (task, h, w)
        ids, counts = np.unique(ref, return_counts=True)
        assert [c['id'] for c in body['classes']] == ids.tolist()
        assert [c['pixels'] for c in body['classes']] == counts.tolist()
        assert sum(c['pixels'] for c in body['classes']) == h * w
        for c in body['classes']:
            assert c['name'] == names[c['id']]
            assert c['color'] == palette[c['id']]
            assert c['fraction'] == pytest.approx(c['pixels'] / (h * w),
                                                  abs=1e-5)

        res = predict(server, task, png(img), 'overlay')
        assert res.status_code == 200, res.text
        over = Image.open(io.BytesIO(res.content))
        assert (over.format, over.mode, over.size) == ('PNG', 'RGB', (w, h))

    res = server.post('/predict', params=dict(task=task),
                      files=dict(image=('x.png', png(images[1]),
                                        'image/png')))
    assert res.status_code == 200, res.text
    np.testing.assert_array_equal(label_png(res.content), refs[task][1])


def _odd_images() -> dict:
    rng = np.random.default_rng(3)

    def rand(*shape, top=256, dtype=np.uint8):
        return rng.integers(0, top, shape, dtype=dtype)

    color = rand(50, 40, 3)
    return {
        '1x1': png(color[:1, :1]),
        'thin 3x190': png(rand(3, 190, 3)),
        'tall 150x4': png(rand(150, 4, 3)),
        'grayscale': png(rand(45, 66)),
        'rgba': png(rand(33, 47, 4)),
        '16-bit': png(rand(40, 52, 3, top=65536, dtype=np.uint16)),
        'jpeg': cv2.imencode('.jpg', color)[1].tobytes(),
        'bmp': cv2.imencode('.bmp', color)[1].tobytes(),
    }


ODD_IMAGES = _odd_images()


@pytest.mark.parametrize('kind', list(ODD_IMAGES))
def test_odd_images_equal_the_reference(server, models, kind):
    """Tiny, extreme-aspect, grayscale, RGBA, 16-bit, JPEG and BMP uploads
    are read as OpenCV reads them (BGR uint8) and every task's label map
    equals the reference's on that image, at the image's size."""
    body = ODD_IMAGES[kind]
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    for task in TASKS:
        res = predict(server, task, body)
        assert res.status_code == 200, \
            f'{task}: {res.text}\n{log_tail(server)}'
        labels = label_png(res.content)
        assert labels.shape == img.shape[:2], task
        np.testing.assert_array_equal(labels, labels_of(models[task], img),
                                      err_msg=task)


# --------------------------------------------------------------------------
# bad requests
# --------------------------------------------------------------------------
LOADED = "['ade', 'fcn4', 'shallow7']"


def _bad_predicts():
    blank = png(np.zeros((400, 400, 3), np.uint8))  # small in bytes
    noise = np.random.default_rng(0).integers(0, 256, 200_000,
                                              np.uint8).tobytes()
    return {
        'unknown task': (
            dict(params=dict(task='nope'), content=b'x'), 404,
            f"unknown task 'nope'; loaded: {LOADED}"),
        'not an image': (
            dict(content=b'this is not an image'), 415,
            'the body (20 bytes) is not an image that can be decoded (PNG, '
            'JPEG, BMP, TIFF or WebP)'),
        'empty body': (
            dict(content=b''), 400,
            'empty request body: send an image file (PNG, JPEG, BMP, TIFF '
            'or WebP) as the body or as the multipart field "image"'),
        'body far over max bytes': (
            dict(content=noise), 413,
            f'request body of 200000 bytes is larger than the limit of '
            f'{MAX_BYTES} bytes (--max-image-bytes)'),
        'body just over max bytes': (
            dict(content=noise[:MAX_BYTES + 1]), 413,
            f'image larger than the limit of {MAX_BYTES} bytes '
            '(--max-image-bytes)'),
        'chunked body over max bytes': (
            dict(content=iter([noise[:40_000], noise[40_000:80_000]])), 413,
            f'image larger than the limit of {MAX_BYTES} bytes '
            '(--max-image-bytes)'),
        'multipart over max bytes': (
            dict(files=dict(image=('big.png', noise[:MAX_BYTES + 10]))),
            413, f'image larger than the limit of {MAX_BYTES} bytes '
            '(--max-image-bytes)'),
        'multipart without image': (
            dict(files=dict(picture=('a.png', b'abc'))), 400,
            'multipart body without a file field "image"'),
        'over max pixels': (
            dict(content=blank), 413,
            f'image of 400x400 pixels is larger than the limit of '
            f'{MAX_PIXELS} pixels (--max-image-pixels)'),
        'unknown format': (
            dict(params=dict(task='ade', format='gif'), content=b'x'), 400,
            "format must be one of ['png', 'json', 'overlay'], got 'gif'"),
    }


BAD_PREDICTS = _bad_predicts()


@pytest.mark.parametrize('case', list(BAD_PREDICTS))
def test_bad_predict_gets_4xx_and_server_goes_on(server, images, refs, case):
    """Each bad /predict gets its status and a message naming the problem
    (and the limit, or the loaded tasks); the next valid request is
    answered correctly."""
    kwargs, status, detail = BAD_PREDICTS[case]
    kwargs = dict(kwargs)
    kwargs.setdefault('params', dict(task='shallow7'))
    before = metrics(server)['responses_by_status'].get(str(status), 0)
    res = server.post('/predict', **kwargs)
    assert res.status_code == status, res.text
    assert res.json() == dict(detail=detail)
    assert metrics(server)['responses_by_status'][str(status)] == before + 1
    assert_serves(server, images, refs)


def test_bad_task_changes_get_4xx_and_server_goes_on(server, files, images,
                                                     refs):
    """POST /tasks: a file tuned on another base is 409 naming both
    SHA-256s; a VPT+Bias file is 422 naming a changed bias; a missing file
    or a file that is no checkpoint is 400 naming it; a taken name is 409;
    a name with '/' is 400, no checkpoints 422 (validation); DELETE of an
    unknown task is 404. Nothing is added, and valid
    requests are still answered right after each."""
    res = server.post('/tasks', json=dict(name='foreign',
                                          checkpoints=[str(files['foreign'])]))
    assert res.status_code == 409, res.text
    detail = res.json()['detail']
    assert 'was tuned on base weights' in detail
    assert f"sha256 {sha256(files['other_base'])}" in detail
    assert f"sha256 {sha256(files['base'])}" in detail
    assert_serves(server, images, refs, 'fcn4', 2)

    res = server.post('/tasks', json=dict(name='bias',
                                          checkpoints=[str(files['bias'])]))
    assert res.status_code == 422, res.text
    detail = res.json()['detail']
    assert re.search(r'changes \d+ weights of the frozen backbone '
                     r'\(backbone\.[\w.]*bias', detail), detail
    assert "frozen_exclude=['prompt', 'bias']" in detail
    assert_serves(server, images, refs, 'shallow7', 3)

    missing = str(files['folder'] / 'missing.pth')
    res = server.post('/tasks', json=dict(name='missing',
                                          checkpoints=[missing]))
    assert res.status_code == 400, res.text
    assert res.json() == dict(
        detail=f'no such file on the server: {[missing]}')
    assert_serves(server, images, refs)

    res = server.post('/tasks', json=dict(
        name='garbage', checkpoints=[str(files['garbage'])]))
    assert res.status_code == 400, res.text
    assert str(files['garbage']) in res.json()['detail']
    assert_serves(server, images, refs)

    res = server.post('/tasks', json=dict(name='ade',
                                          checkpoints=[str(files['ade'][1])]))
    assert res.status_code == 409, res.text
    assert res.json() == dict(
        detail="task 'ade' is already loaded; remove it first")
    assert_serves(server, images, refs)

    res = server.post('/tasks', json=dict(
        name='a/b', checkpoints=[str(files['new7'][1])]))
    assert res.status_code == 400, res.text
    assert res.json() == dict(detail="task name must be a non-empty string "
                              "without '/', got 'a/b'")
    assert_serves(server, images, refs)

    res = server.post('/tasks', json=dict(name='empty', checkpoints=[]))
    assert res.status_code == 422, res.text
    assert [e['loc'] for e in res.json()['detail']] == [
        ['body', 'checkpoints']]
    assert_serves(server, images, refs)

    res = server.delete('/tasks/nope')
    assert res.status_code == 404, res.text
    assert res.json() == dict(
        detail=f"unknown task 'nope'; loaded: {LOADED}")
    assert server.get('/health').json()['tasks'] == list(TASKS)
    assert_serves(server, images, refs, 'fcn4', 5)


# --------------------------------------------------------------------------
# run-time tasks
# --------------------------------------------------------------------------
def test_task_added_and_removed_at_run_time(server, files, images, refs):
    """POST /tasks adds a 4th task (a new seed of 'shallow7') that shows in
    /tasks and predicts its own file's reference labels (not
    shallow7's); DELETE removes it, after which predicting it is 404 and
    the other tasks are unchanged."""
    path = str(files['new7'][1])
    assert not np.array_equal(refs['new7'][0], refs['shallow7'][0])
    res = server.post('/tasks', json=dict(name='new7', checkpoints=[path]))
    assert res.status_code == 201, res.text
    added = res.json()
    assert (added['name'], added['num_classes'], added['files']) == (
        'new7', 7, [path])
    assert added['classes'] == [f'new7-{i}' for i in range(7)]
    assert [t['name'] for t in server.get('/tasks').json()] == [
        *TASKS, 'new7']
    for i in (0, 4):
        res = predict(server, 'new7', png(images[i]))
        assert res.status_code == 200, res.text
        np.testing.assert_array_equal(label_png(res.content),
                                      refs['new7'][i])
    assert_serves(server, images, refs, 'shallow7', 0)

    res = server.delete('/tasks/new7')
    assert res.status_code == 200, res.text
    assert res.json() == dict(removed='new7', tasks=list(TASKS))
    res = predict(server, 'new7', png(images[0]))
    assert res.status_code == 404, res.text
    assert res.json() == dict(detail=f"unknown task 'new7'; loaded: {LOADED}")
    assert [t['name'] for t in server.get('/tasks').json()] == list(TASKS)
    assert_serves(server, images, refs, 'shallow7', 4)


def test_prompt_ensemble_added_at_run_time(server, files, models, images):
    """POST /tasks with two files of one task (shallow7 and a new seed) is
    a prompt ensemble of size 2 whose labels are the argmax of the two
    references' mean softmax; DELETE removes it."""
    paths = [str(files['shallow7'][1]), str(files['new7'][1])]
    res = server.post('/tasks', json=dict(name='ens7', checkpoints=paths))
    assert res.status_code == 201, res.text
    added = res.json()
    assert (added['ensemble_size'], added['num_classes'], added['files']
            ) == (2, 7, paths)
    try:
        for i in (1, 5):
            logits = [inference(models[t], images[i]).seg_logits.data
                      for t in ('shallow7', 'new7')]
            expect = torch.stack(logits).softmax(1).mean(0).argmax(0)
            for alone in logits:  # the ensemble is neither member alone
                assert not torch.equal(expect, alone.argmax(0))
            res = predict(server, 'ens7', png(images[i]))
            assert res.status_code == 200, res.text
            np.testing.assert_array_equal(label_png(res.content),
                                          expect.numpy())
    finally:
        res = server.delete('/tasks/ens7')
    assert res.status_code == 200, res.text
    assert res.json() == dict(removed='ens7', tasks=list(TASKS))


def test_task_removed_under_load(server, files, images, refs):
    """DELETE of a task while 32 of its requests are in flight (sent once
    the first is answered; batches of 8, so at least 16 are still queued
    or unsent): every request is answered, 200 with the task's labels if
    it ran before the removal, else 404 naming the loaded tasks (never a
    500, none lost); the other tasks are unaffected."""
    path = str(files['new7'][1])
    res = server.post('/tasks', json=dict(name='tmp7', checkpoints=[path]))
    assert res.status_code == 201, res.text

    async def scenario():
        async with httpx.AsyncClient(
                base_url=str(server.base_url), timeout=120,
                limits=httpx.Limits(max_connections=40)) as client:
            async def one(i):
                res = await client.post('/predict', params=dict(task='tmp7'),
                                        content=png(images[i % 4]))
                return i % 4, res
            jobs = [asyncio.ensure_future(one(i)) for i in range(32)]
            await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            removed = await client.delete('/tasks/tmp7')
            return removed, await asyncio.gather(*jobs)

    removed, answers = asyncio.run(scenario())
    assert removed.status_code == 200, removed.text
    assert len(answers) == 32
    statuses = sorted(res.status_code for _, res in answers)
    assert set(statuses) <= {200, 404}, [r.text for _, r in answers]
    assert statuses[0] == 200  # the first answer came before the DELETE
    assert statuses[-1] == 404  # the last batches came after it
    for i, res in answers:
        if res.status_code == 200:
            np.testing.assert_array_equal(label_png(res.content),
                                          refs['new7'][i])
        else:
            assert res.json() == dict(
                detail=f"unknown task 'tmp7'; loaded: {LOADED}")
    assert server.get('/health').json()['tasks'] == list(TASKS)
    assert_serves(server, images, refs, 'fcn4', 1)


# --------------------------------------------------------------------------
# dynamic batching
# --------------------------------------------------------------------------
async def _concurrent(url: str, jobs: list) -> list:
    """POST every (task, body) of ``jobs`` at once; [(status, content)]."""
    limits = httpx.Limits(max_connections=len(jobs))
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=limits) as client:
        async def one(task, body):
            res = await client.post('/predict', params=dict(task=task),
                                    content=body)
            return res.status_code, res.content
        return await asyncio.gather(*(one(t, b) for t, b in jobs))


def test_concurrent_requests_are_batched_and_none_lost(server, images,
                                                       refs):
    """27 concurrent requests over the three tasks and two image sizes:
    27 answers, all 200, each equal to the reference of its own image and
    task; /metrics counts exactly 27 more samples and 200s, in batches of
    which some hold more than one request (mean batch size > 1)."""
    jobs = [(TASKS[k % 3], k % len(images)) for k in range(27)]
    before = metrics(server)
    answers = asyncio.run(_concurrent(
        str(server.base_url), [(t, png(images[i])) for t, i in jobs]))
    after = metrics(server)
    assert len(answers) == len(jobs)
    assert [status for status, _ in answers] == [200] * len(jobs)
    for (task, i), (_, content) in zip(jobs, answers):
        np.testing.assert_array_equal(label_png(content), refs[task][i],
                                      err_msg=f'{task} image {i}')
    assert after['samples'] - before['samples'] == len(jobs)
    assert after['failed_samples'] == before['failed_samples']
    grown = {int(k): v - before['batch_sizes'].get(k, 0)
             for k, v in after['batch_sizes'].items()}
    assert sum(k * v for k, v in grown.items()) == len(jobs)
    new_batches = after['batches'] - before['batches']
    assert sum(grown.values()) == new_batches < len(jobs)
    assert max(k for k, v in grown.items() if v) > 1, grown
    assert max(int(k) for k in after['batch_sizes']) <= 8
    assert after['responses_by_status']['200'] - \
        before['responses_by_status']['200'] == len(jobs) + 1  # + before's
    assert after['queued'] == 0
    assert after['latency_ms']['count'] >= len(jobs)


def test_requests_of_different_tasks_share_a_batch(server, images, refs):
    """One request per task, sent at once: when /metrics shows they ran in
    fewer batches than requests, a batch held requests of different tasks
    (each task has one request), i.e. they shared a backbone pass; the
    answers are still each task's reference. (Tried up to 5 times, since
    the 50 ms window may miss a late request on a busy machine.)"""
    jobs = [(task, i) for i, task in enumerate(TASKS)]
    for _ in range(5):
        before = metrics(server)
        answers = asyncio.run(_concurrent(
            str(server.base_url), [(t, png(images[i])) for t, i in jobs]))
        after = metrics(server)
        for (task, i), (status, content) in zip(jobs, answers):
            assert status == 200
            np.testing.assert_array_equal(label_png(content),
                                          refs[task][i])
        assert after['samples'] - before['samples'] == 3
        if after['batches'] - before['batches'] < 3:
            return
    raise AssertionError(f'3 concurrent requests of 3 tasks never shared '
                         f'a batch: {after}')


# --------------------------------------------------------------------------
# read-only
# --------------------------------------------------------------------------
def test_read_only_server_refuses_task_changes(files, images, refs):
    """--read-only: POST and DELETE /tasks are 403 with a message naming
    the flag, the tasks stay, and predictions still work."""
    log = files['folder'] / 'readonly.log'
    proc, url = start_server(
        [files['shallow7'][1], '--task',
         f"shallow7={files['shallow7'][1]}", '--read-only', '--threads', 1],
        log)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            res = client.post('/tasks', json=dict(
                name='new7', checkpoints=[str(files['new7'][1])]))
            assert res.status_code == 403, res.text
            assert res.json() == dict(
                detail='task changes are disabled (--read-only)')
            res = client.delete('/tasks/shallow7')
            assert res.status_code == 403, res.text
            assert res.json() == dict(
                detail='task changes are disabled (--read-only)')
            assert client.get('/health').json()['tasks'] == ['shallow7']
            assert_serves(client, images, refs, 'shallow7', 1)
    finally:
        stop_server(proc, log, signal.SIGTERM)
