from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open('mmseg_vpt/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmseg_vpt',
    version=read_version(),
    description='Visual Prompt Tuning (VPT) backbones and configs for '
    'mmsegmentation 1.x',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmseg_vpt', 'mmseg_vpt.*']),
    package_data={'mmseg_vpt.serving': ['static/*']},
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
