import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# configs/ and tools/ travel inside the built package, under
# mmseg_vpt/.mim/ as OpenMMLab packages carry theirs, so an installed wheel
# can run the VTAB / FGVC sweeps (mmseg_vpt.vtab.folders finds them).
PACKAGE_DATA_DIRS = ('configs', 'tools')


def read_version():
    scope = {}
    with open('mmseg_vpt/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


class BuildWithConfigsAndTools(build_py):
    """``build_py`` that also copies configs/ and tools/ into the built
    package's ``.mim/`` (the build folder only: the source tree is left
    as it is). An editable install skips it: there the sweep tools pass the
    checkout's own folders."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = os.path.join(self.build_lib, 'mmseg_vpt', '.mim')
        if os.path.isdir(target):  # a stale copy of an earlier build
            shutil.rmtree(target)
        for name in PACKAGE_DATA_DIRS:
            if not os.path.isdir(name):
                raise FileNotFoundError(
                    f'{name}/ not found beside setup.py: the package carries '
                    'it (an sdist gets it from MANIFEST.in)')
            shutil.copytree(name, os.path.join(target, name),
                            ignore=shutil.ignore_patterns(
                                '__pycache__', '*.pyc'))


setup(
    name='mmseg_vpt',
    version=read_version(),
    description='Visual Prompt Tuning (VPT) backbones and configs for '
    'mmsegmentation 1.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_vpt', 'mmseg_vpt.*']),
    package_data={'mmseg_vpt.serving': ['static/*']},
    cmdclass={'build_py': BuildWithConfigsAndTools},
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.0',
        'onedl-mmengine>=0.10',
        'onedl-mmcv>=2.3',
        'onedl-mmsegmentation>=1.4',
        'timm',
        'ftfy',
        'regex',
    ],
    extras_require={
        'cls': ['onedl-mmpretrain>=1.3', 'scipy'],
        'serve': ['fastapi', 'uvicorn', 'python-multipart'],
        'tests': ['pytest'],
    },
    license='Apache-2.0',
)
